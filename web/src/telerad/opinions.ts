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


/** The ask form on a request I hold: a question to a named specialist or to a reference centre. `done` gets the
 * new opinion's id. */
export function askForm(
  request: { request_id: number; patient: string; study_uid: string },
  errorBox: HTMLElement,
  done: (opinionId: number) => void,
): HTMLElement {
  const id = `ask-${request.request_id}`;
  const question = el("textarea", { id, name: "question", class: "ask-question" });
  const target = el("select", { id: `${id}-to`, name: "to", class: "ask-to" });
  target.append(
    el("option", { value: "user" }, t("telerad.ask.to_user")),
    el("option", { value: "site" }, t("telerad.ask.to_site")),
  );
  const who = el("input", { id: `${id}-who`, name: "who", class: "ask-who", required: "" });
  const send = el("button", { type: "button", class: "ask-send" }, t("telerad.ask.send"));
  send.addEventListener("click", async () => {
    const slash = request.patient.indexOf("/");
    const body = {
      issuer: request.patient.slice(0, slash),
      patient_id: request.patient.slice(slash + 1),
      study_uid: request.study_uid,
      question: question.value,
      reading_request_id: request.request_id,
      ...(target.value === "site" ? { to_site: who.value } : { to_user: who.value }),
    };
    try {
      const made = await sendJson<{ opinion_id: number }>("/api/telerad/second-opinions", body);
      errorBox.textContent = "";
      question.value = "";
      done(made.opinion_id);
    } catch (error) {
      errorBox.textContent = errorText(error);
    }
  });
  return el(
    "details",
    { class: "telerad-ask" },
    el("summary", {}, t("telerad.ask")),
    el("label", { for: id }, t("telerad.ask.question")),
    question,
    el("label", { for: `${id}-to` }, t("telerad.ask.to")),
    target,
    el("label", { for: `${id}-who` }, t("telerad.ask.who")),
    who,
    send,
  );
}
