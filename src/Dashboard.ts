/**
 * The job service's dashboard: one self-contained HTML page (no build step),
 * served at `/` by `JobHttp`.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 * @category page
 */
export const page = "<!doctype html><html><head><meta charset=\"utf-8\"><title>effect-batch</title></head><body><h1>effect-batch jobs</h1></body></html>"
