// The second opinions (tele-expertise) asked of me or of my centre, on the teleradiology page.
import { sendJson } from "../api";
import { t } from "../i18n";
import { el, errorText, when } from "./dom";

export interface Opinion {
  opinion_id: number;
  patient: string;
  viewer_url: string;
  question: string;
  to_site: string;
  to_user: string;
  asked_by: string;
  asked_at: string;
}

/** Send one step of a second opinion (take, answer), show a refusal in `errorBox`, then reload the page's lists. */
async function opinionStep(
  o: Opinion,
  step: string,
  body: unknown,
  errorBox: HTMLElement,
  reload: () => Promise<void>,
): Promise<void> {
  try {
    await sendJson(`/api/telerad/second-opinions/${o.opinion_id}/${step}`, body);
    errorBox.textContent = "";
  } catch (error) {
    errorBox.textContent = errorText(error);
  }
  await reload();
}

/** One second opinion asked of me: take it (a centre's), or write and send the answer (drafts kept in `answers`). */
export function opinionCard(
  o: Opinion,
  answers: Map<number, string>,
  errorBox: HTMLElement,
  reload: () => Promise<void>,
): HTMLLIElement {
  const item = el(
    "li",
    { class: "telerad-item", "data-opinion": String(o.opinion_id) },
    el("p", {}, `#${o.opinion_id} · ${o.patient} · ${t("telerad.opinion.asked", { who: o.asked_by, time: when(o.asked_at) })}`),
    el("p", {}, o.question),
  );
  const actions = el("div", { class: "telerad-actions" });
  if (o.viewer_url) actions.append(el("a", { href: o.viewer_url, target: "_blank" }, t("telerad.open_study")));
  item.append(actions);
  if (!o.to_user) {
    item.append(el("p", {}, t("telerad.opinion.to_site", { site: o.to_site })));
    const take = el("button", { type: "button", class: "take-opinion" }, t("telerad.opinion.take"));
    take.addEventListener("click", () => void opinionStep(o, "take", {}, errorBox, reload));
    actions.append(take);
    return item;
  }
  const id = `answer-${o.opinion_id}`;
  const text = el("textarea", { id, name: "answer" });
  text.value = answers.get(o.opinion_id) ?? "";
  text.addEventListener("input", () => answers.set(o.opinion_id, text.value));
  const send = el("button", { type: "button", class: "send-answer" }, t("telerad.opinion.send"));
  send.addEventListener("click", async () => {
    await opinionStep(o, "answer", { text: text.value }, errorBox, reload);
    answers.delete(o.opinion_id);
  });
  item.append(el("div", { class: "telerad-report" }, el("label", { for: id }, t("telerad.opinion.answer")), text, send));
  return item;
}

