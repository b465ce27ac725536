import { ReadCoalescer } from '../poller';

/**
 * One listing of every page: what it found, how many requests it took, and whether it is complete
 * (its pages agree on the total and it holds that many; pages read while items are deleted shift).
 */
export type PagedListing<T> = (labelSelector: string) => Promise<{ items: T[]; pages: number; complete: boolean }>;

/**
 * Listings by label selector that concurrent callers share. Every call waits out a short window;
 * the calls of one window are answered by listings taken after the last of them began (never by
 * one already under way), so a caller confirming that something is gone sees the cloud as it is
 * after its delete. When more callers wait than the broad listing (`base`, e.g.
 * `managed-by=tailfleet`) has pages, that one listing answers all of them, each filtered by its own
 * label terms; otherwise each selector is listed on its own. A broad listing that is not complete
 * (a page shifted under it) answers nobody: each selector is then listed on its own.
 */
export class SharedListing<T extends { labels?: Record<string, string> | null }> {
  private readonly coalescer: ReadCoalescer<string, T[]>;
  /** Pages the broad listing took last time. */
  private basePages = 1;
  private readonly baseTerms: Map<string, string>;

  constructor(
    private readonly o: {
      base: string;
      list: PagedListing<T>;
      windowMs: number;
      sleep: (ms: number) => Promise<void>;
    },
  ) {
    const terms = equalityTerms(o.base);
    if (!terms) throw new Error(`Shared listing base ${JSON.stringify(o.base)} must be plain key=value terms`);
    this.baseTerms = terms;
    this.coalescer = new ReadCoalescer((selectors) => this.fetch(selectors), { windowMs: o.windowMs, sleep: o.sleep });
  }

  /** Everything matching `labelSelector`, from a listing taken after this call. */
  list(labelSelector: string): Promise<T[]> {
    return this.coalescer.get(labelSelector);
  }

  private async fetch(selectors: string[]): Promise<Map<string, T[] | Error>> {
    const out = new Map<string, T[] | Error>();
    const narrower = new Map<string, Map<string, string>>();
    for (const s of selectors) {
      const terms = equalityTerms(s);
      if (terms && [...this.baseTerms].every(([k, v]) => terms.get(k) === v)) narrower.set(s, terms);
    }
    const alone = narrower.size > this.basePages ? selectors.filter((s) => !narrower.has(s)) : selectors;
    const jobs: Array<Promise<void>> = alone.map(async (s) => {
      try {
        out.set(s, (await this.o.list(s)).items);
      } catch (err) {
        out.set(s, err as Error);
      }
    });
    if (alone.length < selectors.length) {
      jobs.push(
        (async () => {
          try {
            const { items, pages, complete } = await this.o.list(this.o.base);
            this.basePages = Math.max(1, pages);
            if (!complete) {
              await Promise.all([...narrower.keys()].map(async (s) => out.set(s, (await this.o.list(s)).items)));
              return;
            }
            for (const [s, terms] of narrower) {
              out.set(
                s,
                items.filter((item) => [...terms].every(([k, v]) => item.labels?.[k] === v)),
              );
            }
          } catch (err) {
            for (const s of narrower.keys()) out.set(s, err as Error);
          }
        })(),
      );
    }
    await Promise.all(jobs);
    return out;
  }
}

const EQUALITY_TERM = /^([A-Za-z0-9][A-Za-z0-9._/-]*)=([A-Za-z0-9._-]*)$/;

/** The `key=value` terms of a label selector, or undefined when it has any other kind of term. */
export function equalityTerms(selector: string): Map<string, string> | undefined {
  const terms = new Map<string, string>();
  for (const raw of selector.split(',')) {
    const m = EQUALITY_TERM.exec(raw.trim());
    if (!m) return undefined;
    terms.set(m[1], m[2]);
  }
  return terms;
}
