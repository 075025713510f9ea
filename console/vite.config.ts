import { fileURLToPath } from "node:url";

import { defineConfig } from "vite";

// Served by the gateway under /console; every asset is a file of its own so the Content-Security-Policy
// can stay `script-src 'self'` (no inline script, no eval).
export default defineConfig({
  base: "/console/",
  // The envelope cryptography is the TypeScript partner client's (clients/typescript/src), built in from
  // source; its jose and canonicalize are the console's own copies, as console/package-lock.json pins them.
  resolve: {
    alias: {
      "@deskbridge/partner": fileURLToPath(new URL("../clients/typescript/src/index.ts", import.meta.url)),
    },
    dedupe: ["jose", "canonicalize"],
  },
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
