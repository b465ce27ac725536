import { IsNull, type DataSource, type Repository } from 'typeorm';
import { ApiToken, type TokenScope } from '../entities';
import { NameTakenError } from '../errors';
import { isUniqueViolation } from './errors';

export interface NewApiToken {
  name: string;
  scope: TokenScope;
  tokenHash: string;
  tokenPrefix: string;
  expiresAt: Date | null;
}

/** Another live (not revoked) token already has this name. */
export class TokenNameTakenError extends NameTakenError {
  override readonly name = 'TokenNameTakenError';
  constructor(readonly tokenName: string) {
    super(`A token named "${tokenName}" already exists; revoke it first or pick another name.`);
  }
}

/** The name of an agent's credential; a named token's name cannot contain ':', so it never clashes. */
export const agentTokenName = (agentId: string) => `agent:${agentId}`;

const LIVE_NAME_INDEX = 'uq_api_tokens_live_name';

export class ApiTokenRepository {
  private readonly repo: Repository<ApiToken>;

  constructor(deps: { dataSource: DataSource }) {
    this.repo = deps.dataSource.getRepository(ApiToken);
  }

  async create(input: NewApiToken): Promise<ApiToken> {
    try {
      const result = await this.repo.insert(input);
      return await this.repo.findOneByOrFail({ id: (result.identifiers[0] as { id: string }).id });
    } catch (err) {
      if (isUniqueViolation(err, LIVE_NAME_INDEX)) throw new TokenNameTakenError(input.name);
      throw err;
    }
  }

  /** Newest first; revoked tokens only when asked for. */
  list(opts: { includeRevoked?: boolean } = {}): Promise<ApiToken[]> {
    return this.repo.find({
      // The agents' own credentials are the agents' business: listed with them, not here.
      where: opts.includeRevoked ? { agentId: IsNull() } : { revokedAt: IsNull(), agentId: IsNull() },
      order: { createdAt: 'DESC', id: 'DESC' },
    });
  }

  /** The token with this hash, revoked or expired ones included: the caller decides what they mean. */
  findByHash(tokenHash: string): Promise<ApiToken | null> {
    return this.repo.findOneBy({ tokenHash });
  }

  /** Revokes at once; false when no token has this id. Revoking a revoked token is a no-op. */
  async revoke(id: string): Promise<boolean> {
    const result = await this.repo
      .createQueryBuilder()
      .update()
      .set({ revokedAt: () => 'COALESCE(revoked_at, now())' })
      .where('id = :id', { id })
      .execute();
    return (result.affected ?? 0) > 0;
  }

  /**
   * The credential of an agent's machine (scope `agent`): the agent's earlier ones are revoked in the
   * same transaction, so a provision attempt made again leaves one live credential, the last one
   * delivered. Answers the secret, which goes into the machine's user data and nowhere else.
   */
  async issueAgentToken(agentId: string, make: () => { token: string; tokenHash: string; tokenPrefix: string }): Promise<string> {
    const { token, tokenHash, tokenPrefix } = make();
    await this.repo.manager.transaction(async (m) => {
      await m.getRepository(ApiToken).update({ agentId, revokedAt: IsNull() }, { revokedAt: () => 'now()' } as never);
      await m.getRepository(ApiToken).insert({ name: agentTokenName(agentId), scope: 'agent', tokenHash, tokenPrefix, expiresAt: null, agentId });
    });
    return token;
  }

  /** Revokes every credential of the agent (its destroy); safe to run again. */
  async revokeAgentTokens(agentId: string): Promise<number> {
    const result = await this.repo.update({ agentId, revokedAt: IsNull() }, { revokedAt: () => 'now()' } as never);
    return result.affected ?? 0;
  }

  /** Records a use; callers throttle, so a busy token does not cost a write per request. */
  async touch(id: string, at: Date): Promise<void> {
    await this.repo.update({ id }, { lastUsedAt: at });
  }
}
