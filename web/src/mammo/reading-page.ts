// The screening reading screen: /app/mammo-reading.html[?task=ID]
// The reader's worklist (claim the next case), the case hung on Cornerstone3D viewports (4 views, the prior's
// beside them, any earlier one chosen from a list), the extra views and tomosynthesis stacks in a strip, each
// opening in its own viewport, the reading tools, findings marked on the images and structured in the form, and
// the submit.
// Blinding and refusals are the server's: its reason is shown as it is. While a case is read the next one is
// prepared (not claimed: the server lets the reader see its images for a few minutes) and its images fetched
// into the cache, so that it opens at once; opening it claims it.

import { type CurrentUser, getJson, requireUser, sendJson } from "../api";
import { Hanging, type ToolName, startCornerstone } from "./hanging";
import { type CaseImages, CaseChoices, byId, priorLabel, priorStudies } from "./case-choices";
import { type MammoImage, type ServerView, byView, extras, preload, studyImages } from "./images";
import { ReadForm } from "./read-form";
import { reasonOf } from "./reasons";

interface WorkItem {
  task_id: number;
  role: string;
  claimed: boolean;
  /** "yours": dealt to this reader; "shared": dealt to a colleague, still claimable. */
  share: "yours" | "shared";
  episode_id: number;
  programme: string;
  site: string;
  round: string;
  screen_date: string;
  priority: number;
  batch: string;
}

interface EpisodeView {
  id: number;
  programme: string;
  protocol: string;
  master_id: number | null;
  site: string;
  round: string;
  screen_date: string;
  studies: { study_uid: string; views: ServerView[]; flag: string }[];
  readings: { id: number; role: string; reader: string; submitted_at: string }[];
}

interface ReadingView {
  role: string;
  reader: string;
  right: { assessment: number | null; result: string | null };
  left: { assessment: number | null; result: string | null };
  density: string | null;
  density_fr: number | null;
  findings: unknown[];
  form: Record<string, unknown>;
}

/** A case fetched (claimed, or prepared ahead and claimed when opened), ready to hang. */
interface Prepared extends CaseImages {
  item: WorkItem;
  episode: EpisodeView;
  current: Map<string, MammoImage>;
}

class ReadingScreen {
  private readonly hanging: Hanging;
  private readonly form: ReadForm;
  private readonly choices: CaseChoices;
  private open: Prepared | null = null;
  private next: Promise<Prepared | null> | null = null;
  private nextTask = 0;
  lastOpen: { episode: number; ms: number; preloaded: boolean } | null = null;

  constructor(private readonly me: CurrentUser) {
    this.form = new ReadForm((marks) => this.hanging.setMarks(marks));
    this.hanging = new Hanging(byId("current-views"), byId("prior-views"), byId("extra-view"), (click) =>
      this.form.place(click),
    );
    this.choices = new CaseChoices(this.hanging, () => this.open);
    for (const button of document.querySelectorAll<HTMLButtonElement>("[data-tool]")) {
      button.onclick = () => this.tool(button.dataset.tool as ToolName);
    }
    byId("reset").onclick = () => this.hanging.reset();
    byId("claim-next").onclick = () => void this.claimNext();
    byId("role-filter").onchange = () => void this.refresh();
    byId<HTMLFormElement>("read-form").onsubmit = (e) => {
      e.preventDefault();
      void this.submit();
    };
    byId("skip").onclick = () => void this.skip();
    document.addEventListener("keydown", (e) => this.key(e));
    this.tool("zoom");
  }

  private tool(name: ToolName): void {
    this.hanging.setTool(name);
    for (const b of document.querySelectorAll<HTMLButtonElement>("[data-tool]")) {
      b.classList.toggle("active", b.dataset.tool === name);
    }
  }

  private key(e: KeyboardEvent): void {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    // The arrow keys scroll a tomosynthesis stack slice by slice: the hung stack under the pointer, else the
    // open extra view, else the hung stack last pointed at.
    const step: Record<string, number> = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 };
    const target = e.key in step ? this.hanging.scrollTarget(this.hanging.extra.state() !== null) : null;
    if (target !== null) {
      e.preventDefault();
      const delta = step[e.key] ?? 0;
      void (target === "extra" ? this.hanging.extra.scroll(delta) : this.hanging.scroll(target, delta));
      return;
    }
    if (e.key === "Escape" && this.hanging.extra.state()) {
      this.choices.closeExtra();
      return;
    }
    const keys: Record<string, ToolName> = { z: "zoom", p: "pan", w: "window", g: "magnify", m: "mark" };
    const name = keys[e.key.toLowerCase()];
    if (name) this.tool(name);
    else if (e.key.toLowerCase() === "r") this.hanging.reset();
  }

  async worklist(): Promise<WorkItem[]> {
    const role = byId<HTMLSelectElement>("role-filter").value;
    return getJson<WorkItem[]>(`/api/mammo/worklist${role ? `?role=${encodeURIComponent(role)}` : ""}`);
  }

  /** Show the worklist; returns it. */
  async refresh(): Promise<WorkItem[]> {
    byId("worklist-error").textContent = "";
    try {
      const items = await this.worklist();
      byId("worklist-count").textContent = `(${items.length})`;
      byId("worklist").replaceChildren(
        ...items.map((w) => {
          const li = document.createElement("li");
          li.className = w.claimed ? "work claimed" : "work";
          li.dataset.task = String(w.task_id);
          li.textContent =
            `${w.role} · ${w.programme} · ${w.screen_date} · ${w.round}` +
            (w.batch ? ` · batch ${w.batch}` : "") +
            (w.priority ? ` · priority ${w.priority}` : "") +
            (w.claimed ? " · claimed by you" : w.share === "shared" ? " · a colleague's share" : "");
          if (w.share === "shared") li.classList.add("shared");
          return li;
        }),
      );
      return items;
    } catch (error) {
      byId("worklist-error").textContent = reasonOf(error);
      return [];
    }
  }

  /** Claim the case (unless ours already), or only prepare it (`ahead`: the next case, not claimed), and fetch
   * it: the episode, its images and its prior's, into the cache. */
  private async prepare(item: WorkItem, ahead = false): Promise<Prepared> {
    if (!item.claimed) await this.claimOrPrepare(item.task_id, ahead);
    const episode = await getJson<EpisodeView>(`/api/mammo/episodes/${item.episode_id}`);
    const study = episode.studies[episode.studies.length - 1];
    if (!study) throw new Error(`episode ${episode.id} has no study`);
    const views = new Map(study.views.map((v) => [v.sop, v]));
    const images = await studyImages(study.study_uid, views);
    const current = byView(images);
    const more = extras(images, current);
    const priors = await priorStudies(episode, new Set(episode.studies.map((s) => s.study_uid)));
    const latest = priors[0];
    const prior = latest ? byView(await studyImages(latest.study_uid)) : null;
    // The extra views' first frames too: opening one is then immediate; a stack's other frames load on scroll.
    const hung = [...current.values(), ...(prior?.values() ?? [])];
    await preload([...hung, ...more], new Set(hung.map((i) => i.sop)));
    return {
      item: { ...item, claimed: item.claimed || !ahead },
      episode,
      current,
      extras: more,
      priors,
      prior,
      priorLabel: latest ? priorLabel(latest) : "",
    };
  }

  private async claimOrPrepare(task: number, ahead: boolean): Promise<void> {
    await sendJson(`/api/mammo/tasks/${task}/${ahead ? "prepare" : "claim"}`, {});
  }

  async claimNext(): Promise<void> {
    const items = await this.refresh();
    const item = items.find((w) => w.task_id !== this.open?.item.task_id);
    if (!item) {
      byId("screen-state").textContent = "No case to read.";
      return;
    }
    await this.openCase(item);
  }

  /** Open a case: the prepared next one when it is this one (claimed now), else claim and fetch it now. */
  async openCase(item: WorkItem): Promise<void> {
    const started = performance.now();
    byId("read-error").textContent = "";
    let prepared: Prepared | null = null;
    let preloaded = false;
    try {
      if (this.next !== null && this.nextTask === item.task_id) prepared = await this.next;
      preloaded = prepared !== null;
      if (prepared !== null && !prepared.item.claimed) {
        await this.claimOrPrepare(prepared.item.task_id, false);
        prepared.item.claimed = true;
      }
      prepared ??= await this.prepare(item);
    } catch (error) {
      this.next = null;
      byId("worklist-error").textContent = reasonOf(error);
      await this.refresh();
      return;
    }
    this.next = null;
    this.open = prepared;
    byId("prior-views").hidden = prepared.prior === null;
    byId("hanging").classList.toggle("with-prior", prepared.prior !== null);
    const missing = await this.hanging.show(prepared.current, prepared.prior);
    const ms = Math.round(performance.now() - started);
    this.lastOpen = { episode: prepared.episode.id, ms, preloaded };
    byId("open-time").textContent = `opened in ${ms} ms`;
    byId("prior-title").textContent = prepared.priorLabel;
    this.choices.show(prepared);
    byId("screen-state").textContent = missing.length ? `Missing views: ${missing.join(", ")}` : "";
    this.showCase(prepared);
    document.body.dataset.case = String(prepared.episode.id);
    void this.otherReads(prepared.episode);
    void this.prepareNext();
  }

  private showCase(p: Prepared): void {
    const e = p.episode;
    byId("case-panel").hidden = false;
    byId("case-title").textContent = `Episode ${e.id} · ${p.item.role} read`;
    byId("case-meta").textContent =
      `${e.programme} (${e.protocol}) · ${e.site} · screened ${e.screen_date} · ${e.round} round`;
    byId("read-done").textContent = "";
    this.form.reset(e.protocol === "fr-depistage" && p.item.role === "l2");
  }

  /** The other reads of the case, as far as the protocol lets this reader see them. */
  private async otherReads(episode: EpisodeView): Promise<void> {
    const box = byId("other-reads");
    box.replaceChildren();
    for (const r of episode.readings.filter((x) => x.reader !== this.me.subject)) {
      const p = document.createElement("p");
      p.className = "other-read";
      try {
        const read = await getJson<ReadingView>(`/api/mammo/episodes/${episode.id}/readings/${r.id}`);
        const form = Object.entries(read.form)
          .filter(([, v]) => typeof v === "string" && v)
          .map(([k, v]) => `${k.replaceAll("_", " ")}: ${String(v)}`);
        p.textContent =
          `${read.role.toUpperCase()} read: right ACR ${read.right.assessment ?? "—"}, left ACR ` +
          `${read.left.assessment ?? "—"}, density ${read.density ?? "—"}` +
          (read.density_fr ? ` (${read.density_fr})` : "") +
          `, ${read.findings.length} finding(s)` +
          (form.length ? ` · ${form.join(" · ")}` : "");
      } catch (error) {
        p.classList.add("refused");
        p.textContent = `${r.role.toUpperCase()} read: ${reasonOf(error)}`;
      }
      box.append(p);
    }
  }

  /** Prepare the next case (no claim) and fetch its images while this one is read. */
  private async prepareNext(): Promise<void> {
    const items = await this.worklist().catch(() => [] as WorkItem[]);
    const item = items.find((w) => w.task_id !== this.open?.item.task_id);
    if (!item) return;
    this.nextTask = item.task_id;
    this.next = this.prepare(item, true).catch(() => null);
  }

  private async submit(): Promise<void> {
    const open = this.open;
    if (!open) return;
    byId("read-error").textContent = "";
    const button = byId<HTMLButtonElement>("submit-read");
    button.disabled = true;
    try {
      // Claiming again renews a claim that lapsed while the case was open (409 if someone else took it).
      await this.claimOrPrepare(open.item.task_id, false);
      await sendJson(`/api/mammo/tasks/${open.item.task_id}/reading`, this.form.body());
    } catch (error) {
      byId("read-error").textContent = reasonOf(error);
      return;
    } finally {
      button.disabled = false;
    }
    byId("read-done").textContent = `The read of episode ${open.episode.id} is recorded.`;
    document.body.dataset.submitted = String(open.episode.id);
    await this.advance();
  }

  private async skip(): Promise<void> {
    const open = this.open;
    if (!open) return;
    const reason = prompt("Why do you skip this case?");
    if (!reason) return;
    try {
      await sendJson(`/api/mammo/tasks/${open.item.task_id}/skip`, { reason });
    } catch (error) {
      byId("read-error").textContent = reasonOf(error);
      return;
    }
    await this.advance();
  }

  /** After a submit or a skip: the next case (preloaded when there is one), else the empty screen. */
  private async advance(): Promise<void> {
    const items = await this.refresh();
    const item = items.find((w) => w.task_id !== this.open?.item.task_id);
    if (item) await this.openCase(item);
    else byId("screen-state").textContent = "The worklist is empty.";
  }

  /** What tests and the status bar read: which image hangs where, and where an image point is on the page. */
  hung(): ReturnType<Hanging["hung"]> {
    return this.hanging.hung();
  }

  pagePoint(view: string, x: number, y: number): [number, number] | null {
    return this.hanging.pagePoint(view, x, y);
  }

  /** The read as it would be submitted now. */
  readBody(): ReturnType<ReadForm["body"]> {
    return this.form.body();
  }

  viewState(view: string): ReturnType<Hanging["state"]> {
    return this.hanging.state(view);
  }

  /** The extra viewport: which image, which frame of how many (null when closed). */
  extraState(): ReturnType<Hanging["extra"]["state"]> {
    return this.hanging.extra.state();
  }

  get preparing(): boolean {
    return this.next !== null;
  }

  async nextReady(): Promise<boolean> {
    return this.next !== null && (await this.next) !== null;
  }
}

/** Warn a reader whose counted reads fall below a programme's yearly minimum. */
async function showVolumeWarnings(): Promise<void> {
  const volumes = await getJson<{ programme: string; warning: string }[]>("/api/mammo/readers/me");
  const warnings = volumes.filter((v) => v.warning).map((v) => v.warning);
  const box = byId("volume-warning");
  box.textContent = warnings.join(" · ");
  box.hidden = warnings.length === 0;
}

async function main(): Promise<void> {
  const me = await requireUser();
  void showVolumeWarnings().catch(() => undefined);
  await startCornerstone();
  const screen = new ReadingScreen(me);
  (window as unknown as { archipelMammo: ReadingScreen }).archipelMammo = screen;
  const items = await screen.refresh();
  document.body.dataset.ready = "true";
  // ?task=ID opens that case of the worklist at once (a link from a list of cases).
  const wanted = Number(new URLSearchParams(location.search).get("task"));
  const item = items.find((w) => w.task_id === wanted);
  if (wanted && item) await screen.openCase(item);
  else if (wanted) byId("worklist-error").textContent = `Case ${wanted} is not on your worklist.`;
}

void main();
