/** kubemend's custom search attributes: the one definition used by server setup, the CLI and workflows. */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const SA_CLUSTER = defineSearchAttributeKey('KubemendCluster', SearchAttributeType.KEYWORD);
/** A run may touch several nodes, so this is a keyword list; `KubemendNode = 'n1'` matches any run that lists n1. */
export const SA_NODE = defineSearchAttributeKey('KubemendNode', SearchAttributeType.KEYWORD_LIST);
export const SA_REMEDIATION = defineSearchAttributeKey('KubemendRemediation', SearchAttributeType.KEYWORD);

/** Names and the type names the Temporal CLI (`--search-attribute name=Type`) and operator API use. */
export const SEARCH_ATTRIBUTES: ReadonlyArray<{ name: string; cliType: 'Keyword' | 'KeywordList' }> = [
  { name: SA_CLUSTER.name, cliType: 'Keyword' },
  { name: SA_NODE.name, cliType: 'KeywordList' },
  { name: SA_REMEDIATION.name, cliType: 'Keyword' },
];
