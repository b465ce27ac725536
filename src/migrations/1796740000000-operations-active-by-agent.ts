import type { MigrationInterface, QueryRunner } from 'typeorm';

// Every command an agent is sent first looks for its operations under way (a destroy, the same
// command twice), and the pool claims and the agent detail ask the same. Through
// idx_operations_agent_requested that read every operation the agent ever had: about 1.8 ms of
// database time per command for an agent with 5,000 behind it, growing with its age. This index
// holds only the operations under way, a handful per agent at most, so the look-up stays as cheap
// on the agent's thousandth day as on its first.
export class OperationsActiveByAgent1796740000000 implements MigrationInterface {
  name = 'OperationsActiveByAgent1796740000000';

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`CREATE INDEX "idx_operations_agent_active" ON "operations" ("agent_id") WHERE "status" IN ('queued', 'running')`);
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP INDEX "idx_operations_agent_active"`);
  }
}
