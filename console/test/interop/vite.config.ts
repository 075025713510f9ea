import { defineConfig } from "vite";

// vite-node serves modules like a dev server: let it read tests/vectors/ outside console/.
export default defineConfig({
  server: { fs: { allow: [new URL("../../..", import.meta.url).pathname] } },
});
