/** Progress sink for one job: the processor forwards it to `job.updateProgress` and `job.log`. */
export interface StepReporter {
  step(name: string, progress: number, message?: string): Promise<void>;
}

/** For calls made outside a queue job (tests, scripts). */
export const silentReporter: StepReporter = { step: async () => undefined };
