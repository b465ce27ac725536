type Labels = Record<string, string>;
export type LabelPredicate = (labels: Labels) => boolean;

export class LabelSelectorError extends Error {}

/**
 * Hetzner label selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`;
 * comma-separated terms are ANDed (commas inside parentheses belong to the set).
 */
export function compileLabelSelector(selector: string): LabelPredicate {
  const terms = splitTerms(selector).map(compileTerm);
  if (terms.length === 1) return terms[0];
  return (labels) => {
    for (const t of terms) if (!t(labels)) return false;
    return true;
  };
}

function splitTerms(selector: string): string[] {
  const terms: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < selector.length; i++) {
    const c = selector[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      terms.push(selector.slice(start, i));
      start = i + 1;
    }
    if (depth < 0) throw new LabelSelectorError(`unbalanced ')' in label selector "${selector}"`);
  }
  if (depth !== 0) throw new LabelSelectorError(`unbalanced '(' in label selector "${selector}"`);
  terms.push(selector.slice(start));
  return terms.map((t) => t.trim());
}

const KEY = /^[A-Za-z0-9][A-Za-z0-9._/-]*$/;
const SET_TERM = /^(\S+)\s+(in|notin)\s*\(([^()]*)\)$/;

function compileTerm(term: string): LabelPredicate {
  if (term === '') throw new LabelSelectorError('empty term in label selector');
  const set = SET_TERM.exec(term);
  if (set) {
    const key = checkKey(set[1]);
    const values = new Set(set[3].split(',').map((v) => v.trim()));
    return set[2] === 'in'
      ? (l) => Object.hasOwn(l, key) && values.has(l[key])
      : (l) => !Object.hasOwn(l, key) || !values.has(l[key]);
  }
  if (term.startsWith('!') && !term.includes('=')) {
    const key = checkKey(term.slice(1).trim());
    return (l) => !Object.hasOwn(l, key);
  }
  const ne = term.indexOf('!=');
  if (ne > 0) {
    const key = checkKey(term.slice(0, ne).trim());
    const value = term.slice(ne + 2).trim();
    return (l) => !Object.hasOwn(l, key) || l[key] !== value;
  }
  const eq = term.indexOf('=');
  if (eq > 0) {
    const key = checkKey(term.slice(0, eq).trim());
    const value = term.slice(term.startsWith('==', eq) ? eq + 2 : eq + 1).trim();
    return (l) => Object.hasOwn(l, key) && l[key] === value;
  }
  const key = checkKey(term);
  return (l) => Object.hasOwn(l, key);
}

function checkKey(key: string): string {
  if (!KEY.test(key)) throw new LabelSelectorError(`invalid label key "${key}" in label selector`);
  return key;
}

/** Compiled selectors are cached: clients send the same few selectors over and over. */
export class LabelSelectorCache {
  private cache = new Map<string, LabelPredicate>();

  constructor(private readonly maxEntries = 500) {}

  get(selector: string): LabelPredicate {
    let p = this.cache.get(selector);
    if (!p) {
      p = compileLabelSelector(selector);
      if (this.cache.size >= this.maxEntries) this.cache.clear();
      this.cache.set(selector, p);
    }
    return p;
  }
}
