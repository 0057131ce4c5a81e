/**
 * A strict check of the Prometheus text exposition format 0.0.4 (the subset prom-client writes):
 * `# HELP name text`, `# TYPE name counter|gauge|histogram|summary|untyped`, and samples
 * `name{label="value",...} number` whose family was declared by a TYPE line before. Throws
 * naming the first bad line; returns the families with their samples.
 */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const SAMPLE_RE = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)(?: -?[0-9]+)?$`);
const LABEL_RE = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)/;

export function parsePromText(text: string): Map<string, { type: string; samples: PromSample[] }> {
  const families = new Map<string, { type: string; samples: PromSample[] }>();
  const lines = text.split('\n');
  if (lines[lines.length - 1] !== '') throw new Error('the text must end with a newline');
  for (const [i, line] of lines.slice(0, -1).entries()) {
    const where = `line ${i + 1} ${JSON.stringify(line)}`;
    if (line === '') continue;
    let m = new RegExp(`^# HELP (${NAME}) .*$`).exec(line);
    if (m) continue;
    m = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`).exec(line);
    if (m) {
      if (families.has(m[1])) throw new Error(`${where}: family declared twice`);
      families.set(m[1], { type: m[2], samples: [] });
      continue;
    }
    if (line.startsWith('#')) throw new Error(`${where}: unknown comment`);
    m = SAMPLE_RE.exec(line);
    if (!m) throw new Error(`${where}: not a sample`);
    const [, name, labelText = '', valueText] = m;
    // NaN and ±Inf in any letter case, as Prometheus's parser (Go's ParseFloat) reads them;
    // prom-client writes "Nan" (e.g. the event-loop lag mean before its first sample).
    const isNan = /^nan$/i.test(valueText);
    const value = isNan ? NaN : /^\+?inf$/i.test(valueText) ? Infinity : /^-inf$/i.test(valueText) ? -Infinity : Number(valueText);
    if (Number.isNaN(value) && !isNan) throw new Error(`${where}: bad value`);
    const labels: Record<string, string> = {};
    let rest = labelText;
    while (rest !== '') {
      const l = LABEL_RE.exec(rest);
      if (!l) throw new Error(`${where}: bad labels`);
      labels[l[1]] = l[2];
      rest = rest.slice(l[0].length);
    }
    const family = families.get(name) ?? families.get(name.replace(/_(bucket|sum|count)$/, ''));
    if (!family) throw new Error(`${where}: sample of an undeclared family`);
    family.samples.push({ name, labels, value });
  }
  return families;
}
