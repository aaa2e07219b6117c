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

/** One mammogram, ready for a viewport. */
export interface MammoImage {
  imageId: string;
  sop: string;
  view: string; // "R-CC", "L-MLO", ...
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

/** The view of an instance as the server normalises it when it lacks the episode's list: ImageLaterality (else
 * Laterality) and ViewPosition. */
function viewOf(ds: DicomJson): string {
  const laterality = text(ds, "00200062") || text(ds, "00200060");
  const position = text(ds, "00185101");
  return laterality && position ? `${laterality}-${position}` : "";
}

/**
 * The study's mammograms by SOP Instance UID. `views` (from the episode, the server's normalised views) wins
 * over the image's own attributes; every image id is registered with the WADO-RS loader.
 */
export async function studyImages(studyUid: string, views: Map<string, string> = new Map()): Promise<MammoImage[]> {
  const response = await apiFetch(`${DICOMWEB}/studies/${encodeURIComponent(studyUid)}/metadata`, {
    headers: { Accept: "application/dicom+json" },
  });
  const instances = (await response.json()) as DicomJson[];
  const out: MammoImage[] = [];
  for (const ds of instances) {
    const series = String(first(ds, "0020000E") ?? "");
    const sop = String(first(ds, "00080018") ?? "");
    if (!series || !sop) continue;
    const imageId =
      `wadors:${location.origin}${DICOMWEB}/studies/${studyUid}/series/${series}` + `/instances/${sop}/frames/1`;
    // The loader reads the image's attributes (rows, photometric, rescale...) from this metadata.
    wadors.metaDataManager.add(imageId, ds as never);
    const orientation = ds["00200020"]?.Value ?? [];
    const center = num(ds, "00281050");
    const width = num(ds, "00281051");
    out.push({
      imageId,
      sop,
      view: views.get(sop) ?? viewOf(ds),
      rows: num(ds, "00280010") ?? 0,
      columns: num(ds, "00280011") ?? 0,
      rowDirection: typeof orientation[0] === "string" ? orientation[0].trim().toUpperCase().charAt(0) : "",
      window: center !== null && width !== null && width > 0 ? { center, width } : null,
    });
  }
  return out;
}

/** The image of each screening view (the last one stored wins when a view was retaken in the study). */
export function byView(images: MammoImage[]): Map<string, MammoImage> {
  const out = new Map<string, MammoImage>();
  for (const image of images) if (image.view) out.set(image.view, image);
  return out;
}

/** Fetch and decode the images into Cornerstone's cache (what opening the case then finds ready). */
export async function preload(images: MammoImage[]): Promise<void> {
  await Promise.all(images.map((image) => imageLoader.loadAndCacheImage(image.imageId)));
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
