/** Which nodes a command may touch: the cluster and the --node flags checked against the config. */
import { type Config, findCluster, selectNodes } from '../lib/config';
import { CliError } from './errors';

/** The selected nodes (every node of the cluster when none is named); a cluster or node not in the config is bad input. */
export function pickNodes(cfg: Config, clusterName: string, nodes: readonly string[]): string[] {
  const cluster = findCluster(cfg, clusterName);
  if (!cluster) throw new CliError(`--cluster: no cluster ${JSON.stringify(clusterName)} in the config (it has: ${cfg.clusters.map((c) => c.name).join(', ')})`);
  const picked = selectNodes(cluster, nodes);
  if ('error' in picked) throw new CliError(`--node: ${picked.error}`);
  return picked.nodes;
}
