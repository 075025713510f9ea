import { defineConfig } from "vite";

// Served by the gateway under /console; every asset is a file of its own so the Content-Security-Policy
// can stay `script-src 'self'` (no inline script, no eval).
export default defineConfig({
  base: "/console/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
    target: "es2022",
  },
  test: { environment: "node", include: ["test/**/*.test.ts"] },
});
