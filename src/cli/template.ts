// A small subset of Go's text/template for --format: {{.Field}}, {{.A.B}},
// {{json .X}}, {{index .Map "key"}}, {{upper .X}}/{{lower .X}}, \t and \n.
// A field the data does not have is an error, as with the docker CLI (its
// templates run with missingkey=error or on a struct): `{{.Nmae}}` fails
// instead of printing `<no value>`. A field below a null value is `<no value>`.
export function renderTemplate(tpl: string, data: unknown): string {
  const get = (path: string): unknown => {
    if (path === '.') return data;
    let v: unknown = data;
    for (const part of path.replace(/^\./, '').split('.')) {
      if (v === null || v === undefined) return undefined;
      if (typeof v !== 'object' || !Object.prototype.hasOwnProperty.call(v, part)) {
        const known =
          typeof v === 'object' && !Array.isArray(v)
            ? ` (fields: ${Object.keys(v as object).join(', ')})`
            : '';
        throw new Error(
          `template parsing error: template: :1: executing "" at <${path}>: map has no entry for key "${part}"${known}`,
        );
      }
      v = (v as Record<string, unknown>)[part];
    }
    return v;
  };
  const show = (v: unknown): string => {
    if (v === undefined || v === null) return '<no value>';
    if (typeof v === 'object')
      return Array.isArray(v)
        ? `[${v.map(show).join(' ')}]`
        : `map[${Object.entries(v as object)
            .map(([k, x]) => `${k}:${show(x)}`)
            .join(' ')}]`;
    return String(v);
  };
  return tpl
    .replace(/\\t/g, '\t')
    .replace(/\\n/g, '\n')
    .replace(/\{\{\s*(.*?)\s*\}\}/g, (_m, expr: string) => {
      const words = expr.match(/"[^"]*"|\S+/g) ?? [];
      const [fn = '', ...args] = words;
      if (fn === 'json') return JSON.stringify(get(args[0] ?? '.'));
      if (fn === 'upper') return show(get(args[0] ?? '.')).toUpperCase();
      if (fn === 'lower') return show(get(args[0] ?? '.')).toLowerCase();
      if (fn === 'index') {
        const m = get(args[0] ?? '.') as Record<string, unknown> | undefined;
        return show(m?.[JSON.parse(args[1] ?? '""')]);
      }
      if (fn.startsWith('.')) return show(get(fn));
      throw new Error(
        `template: function "${fn}" is not supported (supported: .Field, json, index, upper, lower)`,
      );
    });
}
