// A study's series as the viewer shows them: the study's DICOM JSON metadata from WADO-RS (with the session
// cookie), grouped by series, each instance registered with the DICOM image loader's WADO-RS metadata manager
// and ordered along the slice normal, so that a stack scrolls in patient order and a volume can be built.

import { wadors } from "@cornerstonejs/dicom-image-loader";
import { apiFetch } from "../api";

export const DICOMWEB = "/dicom-web";
/** Fewer slices than this make no useful volume: such a series opens as a stack only. */
export const MIN_VOLUME_SLICES = 8;
const VOLUME_MODALITIES = new Set(["CT", "MR", "PT", "NM"]);

type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

/** One series of the study, ready for a viewport. */
export interface Series {
  uid: string;
  modality: string;
  number: number | null;
  description: string;
  imageIds: string[];
  /** Whether the series is a CT/MR (...) volume: enough parallel single-frame slices with a geometry. */
  volume: boolean;
}

/** What the page shows above the images. */
export interface StudyHeader {
  patientName: string;
  patientId: string;
  studyDate: string;
  description: string;
}

function first(ds: DicomJson, tag: string): unknown {
  return ds[tag]?.Value?.[0];
}

function str(ds: DicomJson, tag: string): string {
  const v = first(ds, tag);
  if (typeof v === "string") return v.trim();
  if (v && typeof v === "object" && "Alphabetic" in v) return String((v as { Alphabetic: string }).Alphabetic);
  return typeof v === "number" ? String(v) : "";
}

function nums(ds: DicomJson, tag: string): number[] {
  return (ds[tag]?.Value ?? []).map((v) => (typeof v === "number" ? v : Number.parseFloat(String(v))));
}

function cross(a: number[], b: number[]): number[] {
  return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
}

interface Slice {
  imageId: string;
  position: number | null;
  instance: number;
  orientation: string;
  frames: number;
}

/** The study's series, in series-number order, and its header; every image id is known to the loader. */
export async function studySeries(studyUid: string): Promise<{ header: StudyHeader; series: Series[] }> {
  const response = await apiFetch(`${DICOMWEB}/studies/${encodeURIComponent(studyUid)}/metadata`, {
    headers: { Accept: "application/dicom+json" },
  });
  const instances = (await response.json()) as DicomJson[];
  const groups = new Map<string, { ds: DicomJson; slices: Slice[] }>();
  for (const ds of instances) {
    const seriesUid = str(ds, "0020000E");
    const sop = str(ds, "00080018");
    if (!seriesUid || !sop || !ds["00280010"]) continue; // no Rows: not an image (a report, a key object)
    const frames = Math.max(1, Number.parseInt(str(ds, "00280008") || "1", 10) || 1);
    const base = `wadors:${location.origin}${DICOMWEB}/studies/${studyUid}/series/${seriesUid}/instances/${sop}/frames/`;
    const orientation = nums(ds, "00200037");
    const position = nums(ds, "00200032");
    const normal = orientation.length === 6 ? cross(orientation.slice(0, 3), orientation.slice(3)) : null;
    const along =
      normal && position.length === 3 ? position[0] * normal[0] + position[1] * normal[1] + position[2] * normal[2] : null;
    const group = groups.get(seriesUid) ?? { ds, slices: [] };
    groups.set(seriesUid, group);
    for (let f = 1; f <= frames; f += 1) {
      const imageId = base + f;
      // The loader reads the image's attributes (rows, photometric, rescale, geometry) from this metadata.
      wadors.metaDataManager.add(imageId, ds as never);
      group.slices.push({
        imageId,
        position: frames === 1 ? along : null,
        instance: Number.parseInt(str(ds, "00200013") || "0", 10) * 10000 + f,
        orientation: orientation.map((v) => v.toFixed(3)).join(","),
        frames,
      });
    }
  }
  const series: Series[] = [];
  for (const [uid, { ds, slices }] of groups) {
    const positioned = slices.every((s) => s.position !== null);
    slices.sort((a, b) => (positioned ? (a.position ?? 0) - (b.position ?? 0) : a.instance - b.instance));
    const modality = str(ds, "00080060");
    const parallel = new Set(slices.map((s) => s.orientation)).size === 1;
    series.push({
      uid,
      modality,
      number: Number.parseInt(str(ds, "00200011"), 10) || null,
      description: str(ds, "0008103E"),
      imageIds: slices.map((s) => s.imageId),
      volume:
        VOLUME_MODALITIES.has(modality) &&
        positioned &&
        parallel &&
        slices.every((s) => s.frames === 1) &&
        slices.length >= MIN_VOLUME_SLICES,
    });
  }
  series.sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9));
  const any = instances[0] ?? {};
  return {
    header: {
      patientName: str(any, "00100010").replaceAll("^", " "),
      patientId: str(any, "00100020"),
      studyDate: str(any, "00080020"),
      description: str(any, "00081030"),
    },
    series,
  };
}
