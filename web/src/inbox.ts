// The notifications bell of the professional pages: the unread count on a button, and a panel listing the
// user's notifications (GET /api/inbox), those waiting for an acknowledgement first. A notification is marked
// read when opened; one that asks for it (a critical result) is acknowledged with its own button, which closes
// the loop on the sender's side. The bell polls every 30 s, and at once when the page comes back to the front.
//
//   import { mountBell } from "./inbox";
//   mountBell(document.querySelector("#bell-slot")!);

import { apiFetch, getJson } from "./api";
import { language, onLanguageChange, registerTexts, t } from "./i18n";

/** One notification as GET /api/inbox lists it. */
export interface Notification {
  id: number;
  kind: string;
  title: string;
  body: string;
  link: string;
  master_id: number | null;
  created_at: string;
  read_at: string | null;
  requires_ack: boolean;
  acknowledged_at: string | null;
  acknowledged_by: string;
}

/** The caller's inbox and the bell's counts. */
export interface Inbox {
  unread: number;
  awaiting_ack: number;
  latest: number;
  notifications: Notification[];
}

registerTexts({
  fr: {
    "inbox.bell": "Notifications",
    "inbox.bell.count": "Notifications : {n} non lues, {a} à acquitter",
    "inbox.title": "Notifications",
    "inbox.empty": "Aucune notification.",
    "inbox.read": "Marquer comme lue",
    "inbox.ack": "Acquitter",
    "inbox.acked": "Acquittée par {who} le {when}",
    "inbox.needs-ack": "À acquitter",
    "inbox.open": "Ouvrir",
    "inbox.close": "Fermer",
    "inbox.error": "Les notifications n'ont pas pu être lues : {reason}",
  },
  en: {
    "inbox.bell": "Notifications",
    "inbox.bell.count": "Notifications: {n} unread, {a} to acknowledge",
    "inbox.title": "Notifications",
    "inbox.empty": "No notifications.",
    "inbox.read": "Mark as read",
    "inbox.ack": "Acknowledge",
    "inbox.acked": "Acknowledged by {who} on {when}",
    "inbox.needs-ack": "To acknowledge",
    "inbox.open": "Open",
    "inbox.close": "Close",
    "inbox.error": "The notifications could not be read: {reason}",
  },
});

const POLL_MS = 30_000;

function when(iso: string): string {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(language());
}

/** The bell: a button with the unread count and the panel it opens. Returns a function that reloads it. */
export function mountBell(slot: HTMLElement): () => Promise<void> {
  const button = document.createElement("button");
  button.type = "button";
  button.id = "bell";
  button.className = "bell";
  button.setAttribute("aria-haspopup", "true");
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-controls", "inbox-panel");
  // Drawn, not an emoji: a kiosk or a tablet may have no emoji font.
  const icon = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  icon.setAttribute("viewBox", "0 0 24 24");
  icon.setAttribute("width", "18");
  icon.setAttribute("height", "18");
  icon.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", "M12 2a6 6 0 0 0-6 6v4l-2 4h16l-2-4V8a6 6 0 0 0-6-6zm-2 16a2 2 0 0 0 4 0z");
  path.setAttribute("fill", "currentColor");
  icon.append(path);
  const badge = document.createElement("span");
  badge.id = "bell-count";
  badge.className = "bell-count";
  button.append(icon, badge);

  const panel = document.createElement("section");
  panel.id = "inbox-panel";
  panel.className = "inbox-panel";
  panel.hidden = true;
  panel.setAttribute("aria-labelledby", "inbox-heading");
  const heading = document.createElement("h2");
  heading.id = "inbox-heading";
  const close = document.createElement("button");
  close.type = "button";
  close.className = "inbox-close";
  const list = document.createElement("ul");
  list.id = "inbox-list";
  const status = document.createElement("p");
  status.className = "error";
  status.setAttribute("role", "status");
  panel.append(heading, close, list, status);
  slot.append(button, panel);

  let state: Inbox = { unread: 0, awaiting_ack: 0, latest: 0, notifications: [] };

  const setOpen = (open: boolean): void => {
    panel.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    if (open) heading.focus();
  };
  heading.tabIndex = -1;
  button.addEventListener("click", () => setOpen(panel.hidden));
  close.addEventListener("click", () => {
    setOpen(false);
    button.focus();
  });
  // On the document: the button just pressed in the panel may be gone once the list is redrawn.
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !panel.hidden) {
      setOpen(false);
      button.focus();
    }
  });

  const act = async (n: Notification, step: "read" | "acknowledge"): Promise<void> => {
    try {
      await apiFetch(`/api/inbox/${n.id}/${step}`, { method: "POST" });
      status.textContent = "";
    } catch (e) {
      status.textContent = t("inbox.error", { reason: e instanceof Error ? e.message : String(e) });
    }
    await reload();
    // The pressed button was redrawn away: keep the keyboard in the panel.
    if (!panel.hidden && !panel.contains(document.activeElement)) heading.focus();
  };

  const draw = (): void => {
    heading.textContent = t("inbox.title");
    close.textContent = t("inbox.close");
    badge.textContent = state.unread ? String(state.unread) : "";
    badge.dataset.count = String(state.unread);
    button.dataset.awaitingAck = String(state.awaiting_ack);
    button.setAttribute("aria-label", t("inbox.bell.count", { n: state.unread, a: state.awaiting_ack }));
    button.classList.toggle("urgent", state.awaiting_ack > 0);
    list.replaceChildren();
    if (!state.notifications.length) {
      const li = document.createElement("li");
      li.className = "inbox-empty";
      li.textContent = t("inbox.empty");
      list.append(li);
    }
    for (const n of state.notifications) {
      const li = document.createElement("li");
      li.className = "inbox-item";
      li.dataset.id = String(n.id);
      li.dataset.kind = n.kind;
      li.classList.toggle("unread", n.read_at === null);
      const awaiting = n.requires_ack && n.acknowledged_at === null;
      li.classList.toggle("awaiting-ack", awaiting);
      const title = document.createElement("strong");
      title.textContent = n.title;
      const meta = document.createElement("small");
      meta.textContent = `${when(n.created_at)}${awaiting ? ` · ${t("inbox.needs-ack")}` : ""}`;
      const body = document.createElement("p");
      body.textContent = n.body;
      li.append(title, meta, body);
      const actions = document.createElement("div");
      actions.className = "inbox-actions";
      if (n.link) {
        const a = document.createElement("a");
        a.href = n.link;
        a.textContent = t("inbox.open");
        a.addEventListener("click", () => {
          if (n.read_at === null) void apiFetch(`/api/inbox/${n.id}/read`, { method: "POST" });
        });
        actions.append(a);
      }
      if (n.read_at === null && !awaiting) {
        const read = document.createElement("button");
        read.type = "button";
        read.className = "inbox-read";
        read.textContent = t("inbox.read");
        read.addEventListener("click", () => void act(n, "read"));
        actions.append(read);
      }
      if (awaiting) {
        const ack = document.createElement("button");
        ack.type = "button";
        ack.className = "inbox-ack";
        ack.textContent = t("inbox.ack");
        ack.addEventListener("click", () => void act(n, "acknowledge"));
        actions.append(ack);
      }
      if (n.acknowledged_at) {
        const done = document.createElement("small");
        done.className = "inbox-acked";
        done.textContent = t("inbox.acked", { who: n.acknowledged_by, when: when(n.acknowledged_at) });
        actions.append(done);
      }
      li.append(actions);
      list.append(li);
    }
  };

  let seen = "";
  const reload = async (): Promise<void> => {
    try {
      state = await getJson<Inbox>("/api/inbox?limit=50");
      seen = `${state.unread}/${state.awaiting_ack}/${state.latest}`;
      status.textContent = "";
    } catch (e) {
      status.textContent = t("inbox.error", { reason: e instanceof Error ? e.message : String(e) });
    }
    draw();
    slot.dataset.loaded = "true";
  };

  // The counts are polled (numbers only, not audited); the list, whose titles may name a patient, is fetched
  // (and audited) only when they change.
  const poll = async (): Promise<void> => {
    try {
      const c = await getJson<{ unread: number; awaiting_ack: number; latest: number }>("/api/inbox/counts");
      const now = `${c.unread}/${c.awaiting_ack}/${c.latest}`;
      if (now !== seen) await reload();
    } catch (e) {
      status.textContent = t("inbox.error", { reason: e instanceof Error ? e.message : String(e) });
    }
  };

  onLanguageChange(draw);
  draw();
  void poll();
  window.setInterval(() => void poll(), POLL_MS);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") void poll();
  });
  return reload;
}
