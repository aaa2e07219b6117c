// Multi-page build: every page of the app is one HTML entry served under /app/ by the FastAPI app.
// To add a page, add one line to `pages` (name -> HTML file in web/) and create the HTML and its script.
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = fileURLToPath(new URL(".", import.meta.url));

const pages: Record<string, string> = {
  index: "index.html",
  login: "login.html",
  viewer: "viewer.html",
  study: "study.html",
  multihead: "multihead.html",
  "frozen-worklist": "frozen-worklist.html",
  "telerad-worklist": "telerad-worklist.html",
  "frozen-request": "frozen-request.html",
  "frozen-turnaround": "frozen-turnaround.html",
  "mammo-reading": "mammo-reading.html",
  "mammo-dashboard": "mammo-dashboard.html",
  patient: "patient.html",
  "tumor-board": "tumor-board.html",
};

export default defineConfig({
  root: here,
  base: "/app/",
  // Cornerstone3D's DICOM loader decodes in a module worker; its codecs are loaded when first needed.
  worker: { format: "es" },
  optimizeDeps: { exclude: ["@cornerstonejs/dicom-image-loader"] },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: true,
    rollupOptions: {
      input: Object.fromEntries(Object.entries(pages).map(([name, file]) => [name, resolve(here, file)])),
    },
  },
  server: {
    // `npm run dev` proxies the API to a local `archipel serve` (port 8000 by default).
    proxy: { "/api": "http://127.0.0.1:8000", "/tiles": "http://127.0.0.1:8000", "/iiif": "http://127.0.0.1:8000",
      "/dicom-web": "http://127.0.0.1:8000",
      "/ws": { target: "ws://127.0.0.1:8000", ws: true } },
  },
});
