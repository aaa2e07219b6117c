// The mammograms of a study as Cornerstone3D image ids: the study's DICOM JSON metadata from WADO-RS (with the
// session cookie), each instance registered with the DICOM image loader's WADO-RS metadata manager, and its
// laterality, view, orientation and window read from the metadata. Images are fetched by the loader (frames
// from /dicom-web) and kept in Cornerstone's cache, which is what preloading fills.

import { imageLoader } from "@cornerstonejs/core";
import { wadors } from "@cornerstonejs/dicom-image-loader";
import { apiFetch } from "../api";

export const DICOMWEB = "/dicom-web";

/** The four screening views, in hanging order (right breast first). */
export const SCREENING_VIEWS = ["R-CC", "L-CC", "R-MLO", "L-MLO"] as const;
export type ScreeningView = (typeof SCREENING_VIEWS)[number];

/** Breast Tomosynthesis Image Storage: one instance, one frame per slice. */
export const TOMOSYNTHESIS = "1.2.840.10008.5.1.4.1.1.13.1.3";

/** One image's view as the server normalised it at intake. */
export interface ServerView {
  sop: string;
  laterality: string;
  view: string;
  modifier?: string;
  frames?: number;
  tomo?: boolean;
}

/** One mammogram, ready for a viewport (a tomosynthesis stack: one image id per frame). */
export interface MammoImage {
  imageId: string; // the first frame
  imageIds: string[]; // every frame, in order
  sop: string;
  view: string; // "R-CC", "L-MLO", ...
  /** View modifier (spot, magnification...), "" for a plain view. */
  modifier: string;
  tomo: boolean;
  rows: number;
  columns: number;
  /** The patient direction of increasing column (first letter of PatientOrientation), "" when absent. */
  rowDirection: string;
  window: { center: number; width: number } | null;
}

type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

function first(ds: DicomJson, tag: string): unknown {
  return ds[tag]?.Value?.[0];
}

function text(ds: DicomJson, tag: string): string {
  const v = first(ds, tag);
  return typeof v === "string" ? v.trim().toUpperCase() : "";
}

function num(ds: DicomJson, tag: string): number | null {
  const v = first(ds, tag);
  const n = typeof v === "number" ? v : typeof v === "string" ? Number.parseFloat(v) : Number.NaN;
  return Number.isFinite(n) ? n : null;
}

/** View codes (CID 4014, SNOMED CT) of the views a reader meets most, for studies intake has not seen. */
const VIEW_CODES: Record<string, string> = {
  "399162004": "CC",
  "399368009": "MLO",
  "399260004": "ML",
  "399352003": "LM",
  "399192008": "XCCL",
  "399101009": "XCCM",
};

function item(ds: DicomJson, tag: string): DicomJson | null {
  const v = first(ds, tag);
  return v && typeof v === "object" ? (v as DicomJson) : null;
}

/** The view of an instance as the server normalises it when it lacks the episode's list: ImageLaterality (else
 * Laterality, else the functional groups' Frame Laterality) and the View Code Sequence, else ViewPosition. */
function viewOf(ds: DicomJson): string {
  const anatomy = item(item(ds, "52009229") ?? {}, "00209071");
  const laterality = text(ds, "00200062") || text(ds, "00200060") || (anatomy ? text(anatomy, "00209072") : "");
  const code = item(ds, "00540220");
  const position = (code && VIEW_CODES[text(code, "00080100")]) || text(ds, "00185101");
  return laterality && position ? `${laterality}-${position}` : "";
}

/**
 * The study's mammograms by SOP Instance UID. `views` (from the episode, the server's normalised views) wins
 * over the image's own attributes; every image id is registered with the WADO-RS loader.
 */
export async function studyImages(studyUid: string, views: Map<string, ServerView> = new Map()): Promise<MammoImage[]> {
  const response = await apiFetch(`${DICOMWEB}/studies/${encodeURIComponent(studyUid)}/metadata`, {
    headers: { Accept: "application/dicom+json" },
  });
  const instances = (await response.json()) as DicomJson[];
  const out: MammoImage[] = [];
  for (const ds of instances) {
    const series = String(first(ds, "0020000E") ?? "");
    const sop = String(first(ds, "00080018") ?? "");
    if (!series || !sop) continue;
    const base = `wadors:${location.origin}${DICOMWEB}/studies/${studyUid}/series/${series}/instances/${sop}/frames/`;
    const imageId = `${base}1`;
    // The loader reads the image's attributes (rows, photometric, rescale...) from this metadata; it derives
    // every other frame's from the first's (and the functional groups).
    wadors.metaDataManager.add(imageId, ds as never);
    const known = views.get(sop);
    const frames = Math.max(1, Math.round(num(ds, "00280008") ?? 1));
    const orientation = ds["00200020"]?.Value ?? [];
    // The window is the image's, else (enhanced and tomosynthesis images) the shared functional groups' Frame
    // VOI LUT.
    const voi = item(item(ds, "52009229") ?? {}, "00289132");
    const center = num(ds, "00281050") ?? (voi ? num(voi, "00281050") : null);
    const width = num(ds, "00281051") ?? (voi ? num(voi, "00281051") : null);
    out.push({
      imageId,
      imageIds: Array.from({ length: frames }, (_, n) => `${base}${n + 1}`),
      sop,
      view: known?.laterality && known.view ? `${known.laterality}-${known.view}` : viewOf(ds),
      modifier: known?.modifier ?? "",
      tomo: known?.tomo ?? String(first(ds, "00080016") ?? "") === TOMOSYNTHESIS,
      rows: num(ds, "00280010") ?? 0,
      columns: num(ds, "00280011") ?? 0,
      rowDirection: typeof orientation[0] === "string" ? orientation[0].trim().toUpperCase().charAt(0) : "",
      window: center !== null && width !== null && width > 0 ? { center, width } : null,
    });
  }
  return out;
}

/** Whether an image may hang as one of the four screening views: a plain (unmodified) CC or MLO, 2D or a
 * tomosynthesis stack. */
function screening(image: MammoImage): boolean {
  return !image.modifier && (SCREENING_VIEWS as readonly string[]).includes(image.view);
}

/**
 * The image of each screening view: its 2D image (a synthesised 2D too; the last one stored wins when a view was
 * retaken in the study), else its tomosynthesis stack, which then hangs scrolled to its middle slice. A stack
 * beside a 2D image of its view stays an extra view.
 */
export function byView(images: MammoImage[]): Map<string, MammoImage> {
  const out = new Map<string, MammoImage>();
  for (const image of images.filter((i) => screening(i) && i.tomo)) out.set(image.view, image);
  for (const image of images.filter((i) => screening(i) && !i.tomo)) out.set(image.view, image);
  return out;
}

/** The frame (0-based) an image hangs at: the middle slice of a tomosynthesis stack (slice ⌈N/2⌉ of N). */
export function hangingFrame(image: MammoImage): number {
  return image.tomo ? Math.floor((image.imageIds.length - 1) / 2) : 0;
}

/** What the four views leave out: extra views (XCCL, ML, spot compression...), retakes that did not hang,
 * tomosynthesis stacks; right breast first, then by view. */
export function extras(images: MammoImage[], hung: Map<string, MammoImage>): MammoImage[] {
  const shown = new Set([...hung.values()].map((i) => i.sop));
  return images
    .filter((i) => !shown.has(i.sop))
    .sort((a, b) => b.view.localeCompare(a.view) || Number(a.tomo) - Number(b.tomo));
}

/** How an extra view is named in the strip: "R XCCL", "R CC spot", "L CC tomosynthesis (8 frames)". */
export function extraLabel(image: MammoImage): string {
  const name = (image.view || "view?").replace("-", " ");
  if (image.tomo) return `${name} tomosynthesis (${image.imageIds.length} frames)`;
  return image.modifier ? `${name} ${image.modifier}` : name;
}

/** Fetch and decode the images into Cornerstone's cache (what opening the case then finds ready). */
export async function preload(images: MammoImage[], hung: Set<string> = new Set()): Promise<void> {
  // A hung stack's middle slice (what it opens at) too, not only its first frame.
  const ids = images.flatMap((image) => {
    const frame = hung.has(image.sop) ? hangingFrame(image) : 0;
    return frame ? [image.imageId, image.imageIds[frame] ?? image.imageId] : [image.imageId];
  });
  await Promise.all(ids.map((id) => imageLoader.loadAndCacheImage(id)));
}

/**
 * Whether the image must be mirrored so that its chest wall faces the middle of the screen: right-breast views
 * hang on the left with the chest wall on their right edge, left-breast views on the right with the chest wall
 * on their left edge. The chest wall is posterior; PatientOrientation's row direction says where increasing
 * columns point. Without it the usual hanging applies: the left-breast views are mirrored.
 */
export function mirrored(image: MammoImage): boolean {
  const right = image.view.startsWith("R");
  if (image.rowDirection === "P") return !right; // chest wall at the right edge as stored
  if (image.rowDirection === "A") return right; // chest wall at the left edge as stored
  return !right;
}
