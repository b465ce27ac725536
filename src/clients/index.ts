export * from './errors';
export * from './http';
export * from './poller';
export * from './hetzner/hetzner.types';
export * from './hetzner/hetzner.client';
export * from './tailscale/tailscale.types';
export * from './tailscale/tailscale.client';
