import type { HetznerClient } from '../clients/hetzner/hetzner.client';
import type { HetznerImage } from '../clients/hetzner/hetzner.types';
import type { Instance } from '../entities';
import { StateConflictError } from '../errors';
import type { Fleet } from '../fleet/fleet';
import { AGENT_LABEL, FLEET_LABEL, INSTANCE_LABEL, MANAGED_LABEL } from '../fleet/server-labels';
import type { Logger } from '../lib/logger';
import type { GuardContext, OwnershipGuard } from '../fleet/ownership-guard';

/**
 * Hibernation snapshots: how they are found and the one way they are deleted. A snapshot outlives
 * its server and is billed until deleted, so every one tailfleet makes carries managed-by, the fleet,
 * the agent and the instance, and is looked up by those labels before a new one is made.
 */

/** This fleet's snapshots of an agent (of one instance when given), oldest first. */
export async function findSnapshots(
  hetzner: Pick<HetznerClient, 'listImages'>,
  fleet: Fleet,
  o: { agentId: string; instanceId?: string },
): Promise<HetznerImage[]> {
  // Unlike servers, snapshots never predate fleets: the fleet term is always in the selector.
  const terms = [`${MANAGED_LABEL.key}=${MANAGED_LABEL.value}`, `${FLEET_LABEL}=${fleet.name}`, `${AGENT_LABEL}=${o.agentId}`];
  if (o.instanceId) terms.push(`${INSTANCE_LABEL}=${o.instanceId}`);
  const images = await hetzner.listImages({ type: 'snapshot', labelSelector: terms.join(',') });
  return images.filter((image) => carriesAgent(image, fleet, o.agentId) && (!o.instanceId || image.labels[INSTANCE_LABEL] === o.instanceId)).sort((a, b) => a.id - b.id);
}

/** True when the image is a snapshot whose labels name this agent and this fleet. */
export function carriesAgent(image: Pick<HetznerImage, 'type' | 'labels'>, fleet: Fleet, agentId: string): boolean {
  const labels = image.labels ?? {};
  return (
    image.type === 'snapshot' &&
    labels[MANAGED_LABEL.key] === MANAGED_LABEL.value &&
    labels[FLEET_LABEL] === fleet.name &&
    labels[AGENT_LABEL] === agentId
  );
}

/**
 * The only place a snapshot is deleted. The image is read first and must carry this agent's id and
 * this fleet in its labels, whatever id the caller holds. With a guard (the workflows), the delete
 * goes through the ownership guard: a refusal leaves the image, records a needs_attention finding
 * and returns false, and a delete writes its audit event. Without one, a refusal is a permanent
 * error. Returns false when the image was already gone (or refused).
 */
export async function deleteSnapshotImage(
  deps: { hetzner: Pick<HetznerClient, 'getImage' | 'deleteImage'>; fleet: Fleet; logger: Logger },
  target: { imageId: number | string; agentId: string },
  guarded?: { guard: Pick<OwnershipGuard, 'deleteImage'>; ctx: GuardContext },
): Promise<boolean> {
  const imageId = Number(target.imageId);
  const image = await deps.hetzner.getImage(imageId);
  if (!image) return false;
  if (guarded) {
    const outcome = await guarded.guard.deleteImage(image, target.agentId, guarded.ctx, () => deps.hetzner.deleteImage(imageId));
    if (outcome === 'deleted') deps.logger.info({ imageId, agentId: target.agentId }, `[Lifecycle] Snapshot ${imageId} deleted`);
    return outcome === 'deleted';
  }
  if (!carriesAgent(image, deps.fleet, target.agentId)) {
    throw new StateConflictError(
      `Refusing to delete image ${imageId}: it is not a snapshot labelled for agent ${target.agentId} of fleet ${deps.fleet.name}`,
    );
  }
  const deleted = await deps.hetzner.deleteImage(imageId);
  if (deleted) deps.logger.info({ imageId, agentId: target.agentId }, `[Lifecycle] Snapshot ${imageId} deleted`);
  return deleted;
}

/** The instance's recorded snapshot and every one the labels of `scope` find, each deleted (once) through the guard. */
export async function deleteInstanceSnapshots(
  deps: { hetzner: Pick<HetznerClient, 'listImages' | 'getImage' | 'deleteImage'>; fleet: Fleet; logger: Logger },
  instance: Pick<Instance, 'snapshotImageId'>,
  scope: { agentId: string; instanceId?: string },
  guarded: { guard: Pick<OwnershipGuard, 'deleteImage'>; ctx: GuardContext },
): Promise<void> {
  const found = await findSnapshots(deps.hetzner, deps.fleet, scope);
  const ids = new Set([...(instance.snapshotImageId ? [Number(instance.snapshotImageId)] : []), ...found.map((i) => i.id)]);
  for (const imageId of ids) await deleteSnapshotImage(deps, { imageId, agentId: scope.agentId }, guarded);
}
