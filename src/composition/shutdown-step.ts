/** Runs one step of an ordered shutdown: a failure is logged under the step's name and the next step runs. */
export type ShutdownStep = (name: string, fn: () => Promise<unknown>) => Promise<void>;
