// @ts-check
import stylistic from "@stylistic/eslint-plugin"
import tseslint from "typescript-eslint"

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", "coverage/**", "scratch/**"] },
  ...tseslint.configs.recommended,
  stylistic.configs.customize({
    indent: 2,
    quotes: "double",
    semi: false,
    commaDangle: "never",
    braceStyle: "1tbs",
    arrowParens: true
  }),
  {
    rules: {
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/no-namespace": "off",
      "@typescript-eslint/no-empty-object-type": "off",
      "@stylistic/max-len": ["error", { code: 140, ignoreUrls: true, ignoreStrings: true, ignoreTemplateLiterals: true, ignoreComments: true }],
      "@stylistic/operator-linebreak": "off",
      "@stylistic/indent-binary-ops": "off",
      "@stylistic/multiline-ternary": "off",
      "@stylistic/generator-star-spacing": ["error", { before: false, after: false, named: "after" }],
      "@stylistic/yield-star-spacing": ["error", { before: false, after: true }],
      "@stylistic/quotes": ["error", "double", { avoidEscape: true }]
    }
  }
)
