import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
// Already installed as mocha's dependency; reads docker-compose.yml here.
import { load as loadYaml } from 'js-yaml';
import { execForm, parseCopy, parseDockerfile, parseEnv, parseHealthcheck } from '../../scripts/dockerfile';
import { loadConfig } from '../../src/config';
import { validEnv } from '../helpers/config';

// The shape of the production image, compose file and scripts. `npm run check:image` replays the
// Dockerfile's commands for real; this only holds the files to what a deployment relies on.

const ROOT = path.resolve(__dirname, '../..');
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

describe('deployment files', () => {
  const stages = parseDockerfile(read('Dockerfile'));
  const build = stages[0]!;
  const runtime = stages.at(-1)!;
  const of = (stage: typeof build, keyword: string) => stage.instructions.filter((i) => i.keyword === keyword);

  it('the Dockerfile builds in one stage and runs from a slim LTS image in another', () => {
    expect(stages.length).to.be.at.least(2);
    for (const stage of stages) expect(stage.base).to.match(/^node:(22|24)-bookworm-slim$/);
    const buildRuns = of(build, 'RUN').map((i) => i.args);
    expect(buildRuns.some((r) => /\bnpm ci\b/.test(r) && !r.includes('--omit=dev'))).to.equal(true);
    expect(buildRuns.some((r) => /\bnpm run build\b/.test(r))).to.equal(true);
  });

  it('the runtime stage holds production dependencies and dist/ only, and runs as node', () => {
    expect(of(runtime, 'ENV').map((i) => parseEnv(i.args)).find((e) => 'NODE_ENV' in e)?.NODE_ENV).to.equal('production');
    expect(of(runtime, 'RUN').some((i) => /\bnpm ci\b.*--omit=dev/.test(i.args))).to.equal(true);
    expect(of(runtime, 'RUN').some((i) => /npm run build|tsc/.test(i.args))).to.equal(false);
    for (const copy of of(runtime, 'COPY').map((i) => parseCopy(i.args))) {
      if (copy.from !== undefined) {
        expect(copy.from).to.equal(build.name);
        expect(copy.sources).to.deep.equal(['/app/dist']);
      } else {
        expect(copy.sources.every((s) => /^package(-lock)?\.json$/.test(s)), copy.sources.join(' ')).to.equal(true);
      }
    }
    expect(of(runtime, 'USER').map((i) => i.args.trim())).to.deep.equal(['node']);
    // USER comes before CMD, so nothing runs as root at runtime.
    const idx = (k: string) => runtime.instructions.findIndex((i) => i.keyword === k);
    expect(idx('USER')).to.be.below(idx('CMD'));
  });

  it('CMD is exec form on node itself, and HEALTHCHECK probes /healthz with node', () => {
    const cmds = of(runtime, 'CMD');
    expect(cmds).to.have.length(1);
    expect(execForm(cmds[0]!.args)).to.deep.equal(['node', 'dist/src/main.js']);
    const health = of(runtime, 'HEALTHCHECK');
    expect(health).to.have.length(1);
    const { command, options } = parseHealthcheck(health[0]!.args);
    const argv = execForm(command);
    expect(argv?.[0]).to.equal('node');
    expect(argv?.join(' ')).to.include('/healthz');
    expect(options).to.include.keys('interval', 'timeout');
  });

  it('.dockerignore keeps tests, benchmarks, dependencies, builds and git out of the context', () => {
    const ignored = read('.dockerignore')
      .split('\n')
      .map((l) => l.trim());
    expect(ignored).to.include.members(['test', 'bench', 'node_modules', 'dist', '.git']);
  });

  it('npm scripts: start and simulator run the compiled code, dev and simulator:dev run tsx', () => {
    const { scripts } = JSON.parse(read('package.json')) as { scripts: Record<string, string> };
    expect(scripts.start).to.equal('node dist/src/main.js');
    expect(scripts.simulator).to.equal('node dist/src/simulator/main.js');
    expect(scripts.dev).to.equal('tsx src/main.ts');
    expect(scripts['simulator:dev']).to.equal('tsx src/simulator/main.ts');
    expect(scripts.build).to.match(/^tsc -p /);
  });

  describe('docker-compose.yml', () => {
    const compose = loadYaml(read('docker-compose.yml')) as { services: Record<string, any> };
    const tailfleet = compose.services.tailfleet;

    it('restarts services, checks tailfleet health and gives the drain time before SIGKILL', () => {
      for (const [name, service] of Object.entries(compose.services)) expect(service.restart, name).to.equal('unless-stopped');
      expect(tailfleet.healthcheck.test.join(' ')).to.include('/healthz');
      const drain = Number(tailfleet.environment.DRAIN_TIMEOUT_SECONDS ?? 30);
      const grace = /^(\d+)s$/.exec(tailfleet.stop_grace_period)?.[1];
      expect(Number(grace), 'stop_grace_period in seconds').to.be.at.least(drain + 15);
    });

    it('has no default API token: compose refuses to start without one', () => {
      expect(tailfleet.environment.API_TOKEN).to.match(/^\$\{API_TOKEN:\?[^}]+\}$/);
      expect(read('.env.example')).to.match(/^API_TOKEN=$/m);
    });

    it('runs the image as built (node on dist/), with the simulator and tailfleet on matching credentials', () => {
      expect(tailfleet.command).to.equal(undefined);
      expect(compose.services.simulator.command).to.deep.equal(['node', 'dist/src/simulator/main.js']);
      const sim = compose.services.simulator.environment;
      const fallback = (v: string) => /:?-([^}]*)\}$/.exec(v)?.[1];
      expect(fallback(tailfleet.environment.HETZNER_API_TOKEN)).to.equal(fallback(sim.SIM_HETZNER_TOKEN));
      expect(fallback(tailfleet.environment.TAILSCALE_OAUTH_CLIENT_ID)).to.equal(fallback(sim.SIM_TAILSCALE_CLIENT_ID));
      expect(fallback(tailfleet.environment.TAILSCALE_OAUTH_CLIENT_SECRET)).to.equal(fallback(sim.SIM_TAILSCALE_CLIENT_SECRET));
    });

    it('passes several Hetzner projects through: the simulator token is the default only while HETZNER_API_TOKEN is unset', () => {
      // `${VAR-default}`: an empty HETZNER_API_TOKEN stays empty (unset for tailfleet's config) beside HETZNER_PROJECTS.
      expect(tailfleet.environment.HETZNER_API_TOKEN).to.equal('${HETZNER_API_TOKEN-sim-token}');
      expect(tailfleet.environment.HETZNER_PROJECTS).to.equal('${HETZNER_PROJECTS:-}');
      const config = loadConfig({ ...validEnv, HETZNER_API_TOKEN: '', HETZNER_PROJECTS: 'main=tok-1,spare=tok-2' });
      expect(config.hetzner.projects.map((p) => p.name)).to.deep.equal(['main', 'spare']);
      expect(read('.env.example')).to.match(/^#HETZNER_PROJECTS=/m);
    });
  });
});
