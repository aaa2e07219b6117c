// Small DOM helpers of the teleradiology page.
import { ApiError } from "../api";

/** An element with attributes and children. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: Array<Node | string>
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** The server's reason of a refusal, else the error's text. */
export function errorText(error: unknown): string {
  return error instanceof ApiError ? error.detail : String(error);
}

/** A date and time in the page's language. */
export function when(iso: string | null): string {
  return iso ? new Date(iso).toLocaleString(document.documentElement.lang) : "";
}

