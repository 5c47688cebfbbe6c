// Text that reaches the database in a form every backend stores. PostgreSQL's
// `text` refuses U+0000 (error 22021: the statement fails, and a retry fails
// the same way forever), and the pg driver encodes a lone UTF-16 surrogate as
// U+FFFD without a word. SQLite stores both, so the two backends would keep
// different values. Every string parameter of every statement passes through
// here, on both dialects: U+0000 and lone surrogates become U+FFFD.
//
// Identifiers users send (custom_id, model) are refused with line-numbered
// errors long before this (batches/input-validator.ts), so no id is ever
// changed silently; what gets here is free text built from input (error
// messages naming an audio URL, a file name, an upstream's error text) and
// lookups by a path id, which then simply find nothing (404).
import type { CompiledQuery, Dialect, QueryCompiler, RootOperationNode, QueryId } from 'kysely';

/** `text` as it will be stored: U+0000 and lone surrogates replaced by U+FFFD. */
export function storableText(text: string): string {
  let out = text;
  if (out.includes('\u0000')) out = out.replaceAll('\u0000', '\uFFFD');
  const wellFormed = out as string & { isWellFormed(): boolean; toWellFormed(): string };
  return wellFormed.isWellFormed() ? out : wellFormed.toWellFormed();
}

const storableParameter = (value: unknown): unknown => (typeof value === 'string' ? storableText(value) : value);

/** The same dialect, with every compiled statement's string parameters made storable. */
export function withStorableText(dialect: Dialect): Dialect {
  return {
    createAdapter: () => dialect.createAdapter(),
    createDriver: () => dialect.createDriver(),
    createIntrospector: (db) => dialect.createIntrospector(db),
    createQueryCompiler: (): QueryCompiler => {
      const compiler = dialect.createQueryCompiler();
      return {
        compileQuery(node: RootOperationNode, queryId: QueryId): CompiledQuery {
          const compiled = compiler.compileQuery(node, queryId);
          if (!compiled.parameters.some((value) => typeof value === 'string')) return compiled;
          return { ...compiled, parameters: compiled.parameters.map(storableParameter) };
        },
      };
    },
  };
}
