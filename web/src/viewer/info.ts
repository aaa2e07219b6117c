// What the viewer page knows about a slide (GET /api/slides/{id}/viewer).
import { getJson } from "../api";

export interface CaseSlide {
  slide_id: string;
  stain: string;
  container_id: string;
  status: string;
}

export interface SlideInfo {
  slide_id: string;
  status: string;
  accession: string;
  stain: string;
  container_id: string;
  width: number;
  height: number;
  tile_size: number;
  levels: number;
  /** µm per level-0 pixel, (x, y); null when the scanner did not say. */
  mpp: [number, number] | null;
  objective_power: number | null;
  associated: string[];
  dzi: string;
  case_slides: CaseSlide[];
}

export function loadSlideInfo(slideId: string): Promise<SlideInfo> {
  return getJson<SlideInfo>(`/api/slides/${encodeURIComponent(slideId)}/viewer`);
}

export function associatedUrl(slideId: string, kind: "label" | "overview" | "thumbnail"): string {
  return `/api/slides/${encodeURIComponent(slideId)}/associated/${kind}`;
}
