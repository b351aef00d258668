// Shared by the SDK scripts: the command line, the transport (loopback TCP or
// llmfd's Unix socket through an undici Agent), checks that throw a clear
// message, llmfd's reply headers, and the runner that maps the outcome to an
// exit code (0 ok, 1 mismatch or error, 2 bad usage).
//
//   node tests/sdk/SCRIPT.mjs URL CASE[,CASE...] [--model M] [--served-by D]
//                             [--direct]
//
// URL is llmfd's root, http://127.0.0.1:PORT or unix:/path/to/llmfd.sock.
// --served-by D: the deployment expected to answer; it must be named in
// x-llmfd-deployment, and since the test mocks are named after their
// deployments the answer text must be "mock D says hi". --direct: URL is an
// upstream (llmf-mock) rather than llmfd, so llmfd's headers are not
// required; the suite uses it to check the scripts themselves.
import { isDeepStrictEqual } from 'node:util';
import { basename } from 'node:path';

// A failed expectation (as opposed to an exception from the SDK).
export class Mismatch extends Error {}

const USAGE =
	'usage: node SCRIPT.mjs URL CASE[,CASE...] [--model M] [--served-by D] [--direct]';

// Parse process.argv into {url, cases, model, servedBy, direct}.
export function parse_args(default_model) {
	const a = process.argv.slice(2);
	const o = { url: null, cases: null, model: default_model, servedBy: null,
		direct: false };
	const pos = [];
	for (let i = 0; i < a.length; i++) {
		if (a[i] === '--model' && i + 1 < a.length)
			o.model = a[++i];
		else if (a[i] === '--served-by' && i + 1 < a.length)
			o.servedBy = a[++i];
		else if (a[i] === '--direct')
			o.direct = true;
		else if (a[i].startsWith('--'))
			usage(`unknown option ${a[i]}`);
		else
			pos.push(a[i]);
	}
	if (pos.length !== 2)
		usage('need URL and CASE');
	o.url = pos[0];
	o.cases = pos[1].split(',');
	return o;
}

// Print the usage line and exit 2.
function usage(why) {
	console.error(`${why}\n${USAGE}`);
	process.exit(2);
}

// The root URL (no trailing slash) and the SDK options that reach it. A
// unix: URL goes through undici's Agent with connect.socketPath, the same
// dispatcher a user passes in fetchOptions; the host name is then unused.
export async function transport(url) {
	if (url.startsWith('unix:')) {
		const { Agent } = await import('undici');
		const dispatcher = new Agent({ connect: { socketPath: url.slice(5) } });
		return { root: 'http://llmfd', fetchOptions: { dispatcher } };
	}
	if (!/^https?:\/\//.test(url))
		usage(`URL must be http://HOST:PORT or unix:/path, not ${url}`);
	return { root: url.replace(/\/+$/, ''), fetchOptions: {} };
}

// JSON for messages, cut to a readable length.
export function show(v) {
	let s;
	try {
		s = JSON.stringify(v);
	} catch {
		s = String(v);
	}
	if (s === undefined)
		s = String(v);
	return s.length > 600 ? `${s.slice(0, 600)}...` : s;
}

// Throw a Mismatch saying what unless cond holds.
export function check(cond, what) {
	if (!cond)
		throw new Mismatch(what);
}

// Throw unless got deep-equals want.
export function eq(got, want, what) {
	if (!isDeepStrictEqual(got, want))
		throw new Mismatch(`${what}: got ${show(got)}, want ${show(want)}`);
}

// Throw unless v is an integer >= min.
export function count(v, what, min = 0) {
	check(Number.isInteger(v) && v >= min,
		`${what}: got ${show(v)}, want an integer >= ${min}`);
}

// The answer text the mock behind --served-by gives, or null if unknown.
export function expected_text(o) {
	return o.servedBy ? `mock ${o.servedBy} says hi` : null;
}

// Check an answer's text: exactly the mock's sentence when --served-by is
// known, else non-empty.
export function check_text(o, text, what) {
	const want = expected_text(o);
	if (want !== null)
		eq(text, want, what);
	else
		check(typeof text === 'string' && text.length > 0,
			`${what}: got ${show(text)}, want non-empty text`);
}

// Parse a tool call's arguments (JSON text) and check they are the mock's
// {"city":"Oslo"}.
export function check_args(text, what) {
	let v;
	try {
		v = JSON.parse(text);
	} catch (e) {
		throw new Mismatch(`${what}: not JSON: ${show(text)}`);
	}
	eq(v, { city: 'Oslo' }, what);
}

// Check llmfd's reply headers on a fetch Response: x-request-id always;
// x-llmfd-deployment (naming --served-by when given), x-llmfd-provider and
// x-llmfd-attempts unless deployment is false (an answer no deployment gave,
// e.g. a count_tokens estimate). Nothing is required with --direct.
export function check_headers(o, response, what, { deployment = true } = {}) {
	if (o.direct)
		return;
	check(response && response.headers, `${what}: the SDK gave no raw response`);
	const h = (n) => response.headers.get(n);
	check(h('x-request-id'), `${what}: no x-request-id header`);
	if (!deployment)
		return;
	const dep = h('x-llmfd-deployment');
	check(dep, `${what}: no x-llmfd-deployment header`);
	if (o.servedBy)
		eq(dep, o.servedBy, `${what}: x-llmfd-deployment`);
	check(h('x-llmfd-provider'), `${what}: no x-llmfd-provider header`);
	const att = Number(h('x-llmfd-attempts'));
	check(Number.isInteger(att) && att >= 1,
		`${what}: x-llmfd-attempts ${show(h('x-llmfd-attempts'))}`);
}

// Check that an event stream's types came in the given order: each of
// want appears, at or after the previous one.
export function check_order(types, want, what) {
	let at = 0;
	for (const t of want) {
		const i = types.indexOf(t, at);
		check(i >= 0, `${what}: no ${t} (at or after position ${at}) in ${show(types)}`);
		at = i;
	}
}

// Describe an exception: SDK API errors with status, body and llmfd's
// request id; script bugs with their stack; anything else by its message.
function describe(e) {
	if (e instanceof Mismatch)
		return e.message;
	if (e && typeof e.status === 'number') {
		const rid = e.headers && typeof e.headers.get === 'function'
			? e.headers.get('x-request-id') : null;
		return `${e.constructor.name} HTTP ${e.status}: ${show(e.error)}` +
			(rid ? ` (x-request-id ${rid})` : '');
	}
	// A bug in a script or an SDK that no longer fits: the whole stack.
	if (e instanceof TypeError || e instanceof ReferenceError ||
	    e instanceof SyntaxError)
		return e.stack;
	return e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e);
}

// Run the cases named on the command line from the table cases
// ({name: async (o, t) => ...}, t the transport); print one line per case
// and exit 0 if all passed, 1 otherwise. A case that takes longer than
// timeout_ms fails.
export async function run(cases, default_model, timeout_ms = 10000) {
	const o = parse_args(default_model);
	const me = basename(process.argv[1]);
	for (const c of o.cases)
		if (!Object.hasOwn(cases, c))
			usage(`${me}: unknown case ${c}; cases: ${Object.keys(cases).join(', ')}`);
	const t = await transport(o.url);
	let failed = 0;
	for (const c of o.cases) {
		let timer;
		const limit = new Promise((_, rej) => {
			timer = setTimeout(() => rej(new Mismatch(`timed out after ${timeout_ms} ms`)),
				timeout_ms);
		});
		try {
			await Promise.race([cases[c](o, t), limit]);
			console.log(`ok ${me} ${c}`);
		} catch (e) {
			console.log(`FAIL ${me} ${c} (${o.url}, model ${o.model}): ${describe(e)}`);
			failed++;
		} finally {
			clearTimeout(timer);
		}
	}
	process.exit(failed ? 1 : 0);
}

// The tool every tools case declares, in JSON Schema.
export const WEATHER_SCHEMA = {
	type: 'object',
	properties: { city: { type: 'string', description: 'City name' } },
	required: ['city'],
};
