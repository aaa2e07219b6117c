// The slide's annotations on the server: GeoJSON features in level-0 pixels.
import { getJson, sendJson } from "../api";
import type { Position } from "./overlay";

export interface AnnotationFeature {
  type: "Feature";
  id: string;
  geometry: { type: "Point"; coordinates: Position } | { type: "LineString"; coordinates: Position[] } | { type: "Polygon"; coordinates: Position[][] };
  properties: { id: string; label: string; author: string; created_at: string };
}

export interface AnnotationCollection {
  type: "FeatureCollection";
  features: AnnotationFeature[];
}

function base(slideId: string): string {
  return `/api/slides/${encodeURIComponent(slideId)}/annotations`;
}

/** The slide's annotations. */
export function loadAnnotations(slideId: string): Promise<AnnotationCollection> {
  return getJson<AnnotationCollection>(base(slideId));
}

/** Save a new annotation; the server answers with it, id included. Polygons are closed here (GeoJSON rings). */
export function saveAnnotation(slideId: string, kind: "Point" | "LineString" | "Polygon", points: Position[], label: string): Promise<AnnotationFeature> {
  const coordinates = kind === "Point" ? points[0] : kind === "LineString" ? points : [[...points, points[0]]];
  return sendJson<AnnotationFeature>(base(slideId), { type: "Feature", geometry: { type: kind, coordinates }, properties: { label } });
}

/** Delete an annotation. */
export async function deleteAnnotation(slideId: string, id: string): Promise<void> {
  await sendJson<unknown>(`${base(slideId)}/${encodeURIComponent(id)}`, {}, "DELETE");
}

/** The positions of a feature as the overlay draws them (a polygon's ring without its closing repeat). */
export function featurePoints(feature: AnnotationFeature): Position[] {
  const g = feature.geometry;
  if (g.type === "Point") return [g.coordinates];
  if (g.type === "LineString") return g.coordinates;
  return g.coordinates[0].slice(0, -1);
}
