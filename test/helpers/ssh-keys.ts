import { SIM_DEFAULT_CREDENTIALS, seedPublicKey } from '../../src/simulator';

/** Real OpenSSH public keys, with the MD5 fingerprints `ssh-keygen -l -E md5 -f` printed for them. */
export const SSH_KEY_FIXTURES = {
  ed25519: {
    publicKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINJFZ00ZfNPwypRjr5B21mRk08ekVyKTId2QFPQMFIr2 ops@example',
    fingerprint: 'a5:52:ed:9d:04:8b:ea:4b:5d:db:4a:34:ee:9d:2c:72',
  },
  ed25519b: {
    publicKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA4eFHGjj95Y5s/CvFJRYLp6OEL+pvLAjmDRhQBJQtjC key2@example',
    fingerprint: 'dc:ac:1b:76:9a:da:e3:1d:24:54:dc:4c:43:4b:c1:14',
  },
  rsa: {
    publicKey:
      'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDbRmCMNK+t9xbQVAptS/p88R0HKIqmamVzpGptYTtlNooijt9Qd6iGh79+X3yTA6PGFbj9UCXus6SWxmYqY/8XxzkBb/LqrWHZ6ycCUL/ZQHzHyWPkipXCfWeL3CIJpkNDiXBPrb1mYVNVqiDXX1RbgoQbZwWmdy65Ooq423SCxw== rsa@example',
    fingerprint: '7c:6b:bb:91:60:ed:d3:f9:08:d7:b0:89:40:cb:f6:88',
  },
} as const;

/**
 * Adds SSH keys to the simulated Hetzner project through its own POST /ssh_keys, as an operator
 * would before setting HETZNER_SSH_KEYS; answers each key's id by name.
 */
export async function createSshKeys(sim: { hetznerUrl: string }, names: string[]): Promise<Record<string, number>> {
  const ids: Record<string, number> = {};
  for (const name of names) {
    const res = await fetch(`${sim.hetznerUrl}/ssh_keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${SIM_DEFAULT_CREDENTIALS.hetznerToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name, public_key: seedPublicKey(name) }),
    });
    const body = (await res.json()) as { ssh_key: { id: number } };
    if (res.status !== 201) throw new Error(`POST /ssh_keys ${name}: ${res.status} ${JSON.stringify(body)}`);
    ids[name] = body.ssh_key.id;
  }
  return ids;
}
