// What the reader chooses beside the four views of a case: which of the woman's earlier mammograms hangs as the
// prior (a list by date, the latest by default; a native select, so the keyboard works), and which extra view
// or tomosynthesis stack opens in the extra viewport (a strip of buttons under the hanging; Esc closes it).

import { getJson } from "../api";
import type { Hanging } from "./hanging";
import { type MammoImage, byView, extraLabel, preload, studyImages } from "./images";
import { reasonOf } from "./reasons";

/** An earlier study of the woman, as the patient record lists it. */
export interface PriorStudy {
  study_uid: string;
  study_date: string;
  description: string;
  modalities: string[];
}

/** The images of an open case beyond its four views, and the prior hung beside them. */
export interface CaseImages {
  /** Images of the study beyond the four views: extra views, retakes, tomosynthesis stacks. */
  extras: MammoImage[];
  /** Every earlier MG study of the woman the reader may see, newest first; the first hangs by default. */
  priors: PriorStudy[];
  prior: Map<string, MammoImage> | null;
  priorLabel: string;
}

export function byId<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`the page has no #${id}`);
  return found as T;
}

/** "Prior 2024-11-20 (MAMMOGRAPHIE DE DEPISTAGE)". */
export function priorLabel(p: PriorStudy): string {
  const d = p.study_date;
  return `Prior ${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)} (${p.description || "mammography"})`;
}

/** The woman's earlier mammograms among the studies the reader may see, newest first (none when none). */
export async function priorStudies(
  episode: { master_id: number | null; screen_date: string },
  own: Set<string>,
): Promise<PriorStudy[]> {
  if (episode.master_id === null) return [];
  try {
    const { studies } = await getJson<{ studies: PriorStudy[] }>(`/api/patients/${episode.master_id}/studies`);
    const day = episode.screen_date.replaceAll("-", "");
    return studies
      .filter((s) => !own.has(s.study_uid) && s.modalities.includes("MG") && s.study_date < day)
      .sort((a, b) => b.study_date.localeCompare(a.study_date));
  } catch (error) {
    // Priors the reader may not open are shown as such, not hidden.
    byId("prior-title").textContent = `Priors: ${reasonOf(error)}`;
    return [];
  }
}

export class CaseChoices {
  constructor(
    private readonly hanging: Hanging,
    private readonly current: () => CaseImages | null,
  ) {
    byId<HTMLSelectElement>("prior-select").onchange = (e) =>
      void this.choosePrior((e.target as HTMLSelectElement).value);
    byId("extra-close").onclick = () => this.closeExtra();
  }

  /** The list of priors (latest chosen) and the strip of extra views of the case just opened. */
  show(p: CaseImages): void {
    byId<HTMLSelectElement>("prior-select").replaceChildren(
      ...p.priors.map((prior) => {
        const option = document.createElement("option");
        option.value = prior.study_uid;
        option.textContent = priorLabel(prior).replace(/^Prior /, "");
        return option;
      }),
    );
    byId("prior-choice").hidden = p.priors.length < 2;
    byId("extra-views").replaceChildren(
      ...p.extras.map((image) => {
        const button = document.createElement("button");
        button.type = "button";
        button.className = image.tomo ? "extra tomo" : "extra";
        button.dataset.sop = image.sop;
        button.setAttribute("aria-pressed", "false");
        button.textContent = extraLabel(image);
        button.onclick = () => void this.openExtra(image.sop);
        return button;
      }),
    );
    byId("extra-strip").hidden = p.extras.length === 0;
    this.closeExtra();
    if (p.priors[0]) document.body.dataset.prior = p.priors[0].study_uid;
    else delete document.body.dataset.prior;
  }

  /** Hang the earlier study `studyUid` beside the current views instead of the one shown. */
  async choosePrior(studyUid: string): Promise<void> {
    const open = this.current();
    const chosen = open?.priors.find((p) => p.study_uid === studyUid);
    if (!open || !chosen) return;
    try {
      const prior = byView(await studyImages(chosen.study_uid));
      await preload([...prior.values()], new Set([...prior.values()].map((i) => i.sop)));
      if (this.current() !== open) return;
      open.prior = prior;
      open.priorLabel = priorLabel(chosen);
      await this.hanging.showPrior(prior);
      byId("prior-title").textContent = open.priorLabel;
      document.body.dataset.prior = chosen.study_uid;
    } catch (error) {
      byId("prior-title").textContent = `Priors: ${reasonOf(error)}`;
    }
  }

  /** Open one of the case's extra views (or tomosynthesis stacks) in the extra viewport. */
  async openExtra(sop: string): Promise<void> {
    const image = this.current()?.extras.find((i) => i.sop === sop);
    if (!image) return;
    byId("extra-view").hidden = false;
    byId("hanging").classList.add("with-extra");
    this.press(sop);
    await this.hanging.extra.open(image);
    byId("extra-close").hidden = false;
    document.body.dataset.extra = sop;
  }

  /** Close the extra viewport and give its room back to the hanging. */
  closeExtra(): void {
    this.hanging.extra.close();
    byId("extra-view").hidden = true;
    byId("extra-close").hidden = true;
    byId("hanging").classList.remove("with-extra");
    this.press("");
    delete document.body.dataset.extra;
  }

  private press(sop: string): void {
    for (const b of document.querySelectorAll<HTMLButtonElement>("#extra-views button")) {
      b.classList.toggle("active", b.dataset.sop === sop);
      b.setAttribute("aria-pressed", String(b.dataset.sop === sop));
    }
  }
}
