import { Column, CreateDateColumn, Entity, Index, PrimaryGeneratedColumn } from 'typeorm';

/**
 * `agent`: the credential tailfleet makes for one agent's machine at provision (its `agentId`),
 * good for reporting that agent's activity and nothing else; never made through POST /v1/tokens.
 */
export const TOKEN_SCOPES = ['read', 'operate', 'admin', 'agent'] as const;
export type TokenScope = (typeof TOKEN_SCOPES)[number];
/** The scopes an operator gives a named token. */
export const NAMED_TOKEN_SCOPES = ['read', 'operate', 'admin'] as const;

export const TOKEN_NAME_MAX_LENGTH = 64;

// A revoked token keeps its row (and name) for the audit trail; only live names must be unique.
export const LIVE_TOKEN_PREDICATE = `"revoked_at" IS NULL`;

/**
 * A named API token. Only the SHA-256 of the secret is stored: a database dump does not let anyone
 * call the API. The prefix (the first characters of the secret) lets an operator tell tokens apart.
 */
@Entity({ name: 'api_tokens' })
@Index('uq_api_tokens_live_name', ['name'], { unique: true, where: LIVE_TOKEN_PREDICATE })
@Index('uq_api_tokens_hash', ['tokenHash'], { unique: true })
@Index('idx_api_tokens_agent', ['agentId'], { where: `"agent_id" IS NOT NULL` })
export class ApiToken {
  @PrimaryGeneratedColumn('uuid', { primaryKeyConstraintName: 'pk_api_tokens' })
  id!: string;

  @Column({ type: 'varchar', length: TOKEN_NAME_MAX_LENGTH, name: 'name' })
  name!: string;

  @Column({ type: 'enum', enum: TOKEN_SCOPES, enumName: 'api_token_scope', name: 'scope' })
  scope!: TokenScope;

  // Hex SHA-256 of the whole token.
  @Column({ type: 'char', length: 64, name: 'token_hash' })
  tokenHash!: string;

  @Column({ type: 'varchar', length: 16, name: 'token_prefix' })
  tokenPrefix!: string;

  @CreateDateColumn({ type: 'timestamptz', name: 'created_at' })
  createdAt!: Date;

  @Column({ type: 'timestamptz', name: 'expires_at', nullable: true })
  expiresAt!: Date | null;

  @Column({ type: 'timestamptz', name: 'revoked_at', nullable: true })
  revokedAt!: Date | null;

  /** The agent an `agent`-scoped token reports for; null for every other token. */
  @Column({ type: 'uuid', name: 'agent_id', nullable: true })
  agentId!: string | null;

  @Column({ type: 'timestamptz', name: 'last_used_at', nullable: true })
  lastUsedAt!: Date | null;
}
