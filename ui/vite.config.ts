/**
 * Builds the UI into `dist/` (or `--outDir`), with every asset under `/ui/assets/` named by its
 * content hash: the gateway serves `/ui/*` from that folder and lets browsers cache hashed assets
 * for good (services/gateway/src/static-files.ts).
 */
import preact from "@preact/preset-vite";
import { defineConfig } from "vite";

export default defineConfig({
  base: "/ui/",
  plugins: [preact()],
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: true,
    target: "es2022",
  },
  server: {
    // `npm run dev -w ui` against a gateway on 8080 (npm start): API calls go to the gateway.
    proxy: { "/nexusflow.": "http://127.0.0.1:8080" },
  },
});
