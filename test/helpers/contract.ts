import { z } from 'zod';

/**
 * Checks real answers against the OpenAPI document the app serves: the response schema of the
 * matching operation and status, read from the document (not from the zod schemas it was generated
 * from) and compiled with zod's JSON Schema reader, its `#/components/schemas/` references resolved
 * within the document.
 */

interface OpenApiLike {
  paths: Record<string, Record<string, { responses?: Record<string, { content?: Record<string, { schema?: unknown }> }> }>>;
  components: { schemas: Record<string, unknown> };
}

export interface ContractAnswer {
  status: number;
  contentType: string | null;
  body: unknown;
}

const REF = /#\/components\/schemas\//g;

export class ContractValidator {
  private readonly templates: Array<{ path: string; pattern: RegExp }>;
  private readonly compiled = new Map<string, z.ZodType>();

  constructor(private readonly doc: OpenApiLike) {
    this.templates = Object.keys(doc.paths).map((path) => ({
      path,
      pattern: new RegExp(`^${path.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+')}$`),
    }));
  }

  /** The documented path template a concrete path falls under, if any. */
  templateOf(path: string): string | undefined {
    const bare = path.split('?')[0]!;
    return this.templates.find((t) => t.pattern.test(bare))?.path;
  }

  /**
   * What is wrong with an answer, or [] when it matches the document. Answers to routes or methods
   * the document does not describe (404 route-not-found, 405) are not judged here.
   */
  check(method: string, path: string, answer: ContractAnswer): string[] {
    const template = this.templateOf(path);
    const operation = template ? this.doc.paths[template]![method.toLowerCase()] : undefined;
    if (!template || !operation) return [];
    const where = `${method.toUpperCase()} ${template} → ${answer.status}`;
    const response = operation.responses?.[String(answer.status)];
    if (!response) return [`${where}: the status is not documented`];
    if (!response.content) return answer.body === undefined ? [] : [`${where}: documented without a body, but one was sent`];
    const mediaType = (answer.contentType ?? '').split(';')[0]!.trim();
    const media = response.content[mediaType];
    if (!media) return [`${where}: content type ${mediaType || '(none)'} is not one of ${Object.keys(response.content).join(', ')}`];
    if (media.schema === undefined || !mediaType.endsWith('json')) return [];
    const result = this.compile(media.schema).safeParse(answer.body);
    if (result.success) return [];
    return result.error.issues.map((i) => `${where}: ${i.path.join('.') || '(body)'}: ${i.message}`);
  }

  private compile(schema: unknown): z.ZodType {
    const key = JSON.stringify(schema);
    let compiled = this.compiled.get(key);
    if (!compiled) {
      const defs = JSON.parse(JSON.stringify(this.doc.components.schemas).replace(REF, '#/$defs/')) as Record<string, unknown>;
      const root = JSON.parse(key.replace(REF, '#/$defs/')) as Record<string, unknown>;
      compiled = z.fromJSONSchema({ ...root, $defs: defs } as never, { defaultTarget: 'draft-2020-12' });
      this.compiled.set(key, compiled);
    }
    return compiled;
  }
}

/** Fetches the document an app serves and returns its validator. */
export async function contractOf(baseUrl: string): Promise<ContractValidator> {
  const res = await fetch(`${baseUrl}/v1/openapi.json`);
  if (res.status !== 200) throw new Error(`GET /v1/openapi.json answered ${res.status}`);
  return new ContractValidator((await res.json()) as OpenApiLike);
}
