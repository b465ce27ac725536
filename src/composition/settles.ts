/** True when `p` settles within `ms`; false when the deadline passes first (p goes on, unobserved). */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true as const), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs one step of an ordered shutdown: a failure is logged under the step's name and the next step runs. */
export type ShutdownStep = (name: string, fn: () => Promise<unknown>) => Promise<void>;
