/**
 * The JSON an HTTP answer's text holds: undefined when it is empty, and what `otherwise` makes of the
 * text when it is not JSON (a proxy's error page, say); by default undefined as well.
 */
export function jsonOf(text: string, otherwise: (text: string) => unknown = () => undefined): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return otherwise(text);
  }
}
