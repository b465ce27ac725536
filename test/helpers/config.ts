import { expect } from 'chai';
import { ConfigError, loadConfig } from '../../src/config';

/** The least environment loadConfig accepts. */
export const validEnv = {
  DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/tailfleet',
  REDIS_URL: 'redis://127.0.0.1:6379',
  HETZNER_API_TOKEN: 'hz-token',
  TAILSCALE_OAUTH_CLIENT_ID: 'client',
  TAILSCALE_OAUTH_CLIENT_SECRET: 'secret',
  API_TOKEN: 'a-long-enough-api-token',
};

/** The problems loadConfig lists for `env`; fails when it accepts it. */
export function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error('expected a ConfigError');
}
