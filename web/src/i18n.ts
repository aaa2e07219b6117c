// French and English texts of the web app: each page registers its own dictionary, then asks `t(key)`.
//
//   import { registerTexts, t, applyTexts } from "./i18n";
//   registerTexts({ fr: { "worklist.title": "Liste de travail" }, en: { "worklist.title": "Worklist" } });
//   applyTexts(document);              // fills <h1 data-i18n="worklist.title"></h1>
//   t("worklist.count", { n: 3 });     // "{n} requests" -> "3 requests"
//
// The language is the one the user chose (localStorage), else the browser's, else French.

export type Language = "fr" | "en";
export type Texts = Record<string, string>;

export const LANGUAGES: readonly Language[] = ["fr", "en"];
const STORAGE_KEY = "archipel.language";
const dictionaries: Record<Language, Texts> = { fr: {}, en: {} };
const listeners: Array<(lang: Language) => void> = [];

function isLanguage(value: unknown): value is Language {
  return value === "fr" || value === "en";
}

function storedLanguage(): Language | null {
  try {
    const value = localStorage.getItem(STORAGE_KEY);
    return isLanguage(value) ? value : null;
  } catch {
    return null; // storage disabled (private mode, sandboxed frame)
  }
}

function browserLanguage(): Language {
  const preferred = typeof navigator !== "undefined" ? (navigator.languages ?? [navigator.language]) : [];
  for (const tag of preferred) {
    const base = (tag ?? "").slice(0, 2).toLowerCase();
    if (isLanguage(base)) return base;
  }
  return "fr";
}

let current: Language = storedLanguage() ?? browserLanguage();

/** The language texts are shown in now. */
export function language(): Language {
  return current;
}

/** Adds texts to the dictionaries; a later registration of the same key wins. */
export function registerTexts(texts: Partial<Record<Language, Texts>>): void {
  for (const lang of LANGUAGES) Object.assign(dictionaries[lang], texts[lang] ?? {});
}

/** Whether `key` has a text in `lang` (the current language by default), without falling back. */
export function hasText(key: string, lang: Language = current): boolean {
  return key in dictionaries[lang];
}

/**
 * The text for `key` in the current language, with `{name}` placeholders replaced by `vars`.
 * Falls back to French, then English, then the key itself (so a missing text is visible, never blank).
 */
export function t(key: string, vars?: Record<string, string | number>): string {
  const template = dictionaries[current][key] ?? dictionaries.fr[key] ?? dictionaries.en[key] ?? key;
  if (!vars) return template;
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => (name in vars ? String(vars[name]) : whole));
}

/**
 * Fills every element under `root` that carries `data-i18n="key"` (its text), and the attributes named by
 * `data-i18n-placeholder`, `data-i18n-title`, `data-i18n-aria-label` and `data-i18n-alt`. Sets <html lang>.
 */
export function applyTexts(root: ParentNode = document): void {
  for (const element of root.querySelectorAll<HTMLElement>("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n ?? "");
  }
  for (const attribute of ["placeholder", "title", "aria-label", "alt"]) {
    for (const element of root.querySelectorAll<HTMLElement>(`[data-i18n-${attribute}]`)) {
      element.setAttribute(attribute, t(element.getAttribute(`data-i18n-${attribute}`) ?? ""));
    }
  }
  if (typeof document !== "undefined") document.documentElement.lang = current;
}

/** Switches the language, remembers it for the next visit, re-fills the page and tells the listeners. */
export function setLanguage(lang: Language): void {
  current = lang;
  try {
    localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // not remembered, still applied
  }
  if (typeof document !== "undefined") applyTexts(document);
  for (const listener of listeners) listener(lang);
}

/** Calls `listener` after every language change (for texts a page draws itself). */
export function onLanguageChange(listener: (lang: Language) => void): void {
  listeners.push(listener);
}

/**
 * A small "FR | EN" switch, keyboard-usable (real buttons, aria-pressed), to put in a page's header bar.
 */
export function languageSwitch(): HTMLElement {
  const group = document.createElement("div");
  group.className = "language-switch";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", "Langue / Language");
  const draw = (): void => {
    for (const button of group.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.lang === current));
    }
  };
  for (const lang of LANGUAGES) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.lang = lang;
    button.lang = lang;
    button.textContent = lang.toUpperCase();
    button.setAttribute("aria-label", lang === "fr" ? "Français" : "English");
    button.addEventListener("click", () => setLanguage(lang));
    group.append(button);
  }
  draw();
  onLanguageChange(draw);
  return group;
}
