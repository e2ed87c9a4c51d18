/** Reads kubemend's YAML config (--config, else $KUBEMEND_CONFIG) and validates it. */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { type Config, ConfigError, parseConfig } from '../lib/config';

export function configPath(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const p = flag ?? env.KUBEMEND_CONFIG;
  if (!p) throw new ConfigError(['no config file: pass --config FILE or set KUBEMEND_CONFIG']);
  return resolve(p);
}

export function loadConfigFile(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError([`cannot read config file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`], path);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text, { prettyErrors: true, uniqueKeys: true });
  } catch (err) {
    const msg = err instanceof YAMLParseError ? err.message.split('\n')[0] : String(err);
    throw new ConfigError([`not valid YAML: ${msg}`], path);
  }
  const base = dirname(path);
  return parseConfig(doc, { resolvePath: (p) => (isAbsolute(p) ? p : resolve(base, p)), env, source: path });
}
