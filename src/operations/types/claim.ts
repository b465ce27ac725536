import { z } from 'zod';
import type { OperationDescriptor } from './descriptor';

/**
 * Hands a pool's standby over to the one who claimed it: once the agent is ready (a stopped standby
 * is started and a hibernated one woken by operations of their own, requested with the claim; with
 * no standby a new agent is provisioned), its servers carry the claimer's labels. The standby is
 * chosen, renamed and recorded as claimed when the claim is accepted (src/pools/pool.repository.ts),
 * so two claims never get the same agent; the operation does what the cloud has to know.
 */
export const claimArgs = z
  .object({
    pool: z.string().min(1),
    /** How the agent was found: a standby in this state, or none (a new agent was provisioned). */
    from: z.enum(['running', 'stopped', 'hibernated', 'provision']),
    labels: z.record(z.string(), z.string()),
    /** As asked; handed to the lease facility when the agent is ready (src/pools/claim-seam.ts). */
    leaseSeconds: z.number().int().positive().nullable(),
  })
  .strict();
export type ClaimArgs = z.output<typeof claimArgs>;

export const claim = {
  args: claimArgs,
  payload: 'agent',
  // The agent and its instance keep their statuses: a claim changes who holds them, not what they are.
  instance: {},
  agent: {},
  run: (w, job, r, op) => w.claim.claim(job.data.agentId, op, r),
} satisfies OperationDescriptor<'agent'>;
