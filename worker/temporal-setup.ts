/** Namespace-level setup kubemend needs: its custom search attributes. Idempotent. */
import type { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { SEARCH_ATTRIBUTES } from '../lib/search-attributes';

const INDEXED = {
  Keyword: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  KeywordList: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
} as const;

/** Registers any of kubemend's search attributes the namespace lacks; returns the names it added. */
export async function ensureSearchAttributes(connection: Connection, namespace: string): Promise<string[]> {
  const have = await connection.operatorService.listSearchAttributes({ namespace });
  const existing = { ...(have.customAttributes ?? {}) };
  const missing = SEARCH_ATTRIBUTES.filter((a) => !(a.name in existing));
  for (const a of SEARCH_ATTRIBUTES) {
    const t = existing[a.name];
    if (t !== undefined && t !== INDEXED[a.cliType]) {
      throw new Error(`search attribute ${a.name} exists in namespace ${namespace} with another type (${t}); kubemend needs ${a.cliType}`);
    }
  }
  if (missing.length === 0) return [];
  await connection.operatorService.addSearchAttributes({
    namespace,
    searchAttributes: Object.fromEntries(missing.map((a) => [a.name, INDEXED[a.cliType]])),
  });
  return missing.map((a) => a.name);
}
