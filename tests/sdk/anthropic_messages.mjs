// The official `@anthropic-ai/sdk` npm client, unmodified, against llmfd's
// POST /v1/messages and /v1/messages/count_tokens: messages.create plain,
// with a tool (and the tool_result sent back) and through client.beta;
// messages.stream (text events, finalMessage(), the raw event order) plain
// and with a tool; messages.countTokens (an Anthropic upstream's count or
// llmfd's estimate); errors in Anthropic's shape (an
// unknown model, every deployment down). Usage: see lib.mjs (default model
// claude-sonnet-4-5).
import Anthropic from '@anthropic-ai/sdk';
import { run, check, eq, count, check_text, check_args, check_headers,
	check_order, show, WEATHER_SCHEMA } from './lib.mjs';

const TOOLS = [{ name: 'get_weather', description: 'Weather in a city',
	input_schema: WEATHER_SCHEMA }];
const SYSTEM = 'Be brief.';
const MESSAGES = [{ role: 'user', content: 'hi' }];
// Sent by the beta case; tests/integration/test_sdk.c checks that an
// Anthropic upstream receives it.
const BETA = 'context-management-2025-06-27';

// A client on llmfd's root (the SDK adds /v1/messages) that never retries by
// itself (llmfd does). The SDK sends x-api-key and anthropic-version.
function client(t) {
	return new Anthropic({ apiKey: 'sk-ant-llmfd-test', baseURL: t.root,
		maxRetries: 0, timeout: 8000, fetchOptions: t.fetchOptions });
}

// Check a Message's envelope and usage.
function check_message(m, what) {
	eq(m.type, 'message', `${what}: type`);
	eq(m.role, 'assistant', `${what}: role`);
	check(typeof m.id === 'string' && m.id, `${what}: id ${show(m.id)}`);
	check(Array.isArray(m.content) && m.content.length > 0,
		`${what}: content ${show(m.content)}`);
	check(m.usage, `${what}: no usage`);
	count(m.usage.input_tokens, `${what}: usage.input_tokens`);
	count(m.usage.output_tokens, `${what}: usage.output_tokens`);
}

// The text of a Message's text blocks.
function text_of(m) {
	return m.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
}

// Check the one tool_use block of a Message; returns it.
function check_tool_use(m, what) {
	const uses = m.content.filter((b) => b.type === 'tool_use');
	eq(uses.length, 1, `${what}: tool_use blocks in ${show(m.content)}`);
	const u = uses[0];
	check(typeof u.id === 'string' && /^[a-zA-Z0-9_-]+$/.test(u.id),
		`${what}: tool_use id ${show(u.id)}`);
	eq(u.name, 'get_weather', `${what}: tool_use name`);
	eq(u.input, { city: 'Oslo' }, `${what}: tool_use input`);
	eq(m.stop_reason, 'tool_use', `${what}: stop_reason`);
	return u;
}

// messages.create: a text answer, end_turn, headers.
async function create(o, t) {
	const { data, response } = await client(t).messages
		.create({ model: o.model, max_tokens: 256, system: SYSTEM,
			messages: MESSAGES })
		.withResponse();
	check_headers(o, response, 'messages');
	check_message(data, 'message');
	eq(data.content[0].type, 'text', 'content[0].type');
	check_text(o, text_of(data), 'text');
	eq(data.stop_reason, 'end_turn', 'stop_reason');
}

// messages.create with a tool: a tool_use block; the tool_result sent back
// (assistant content as received, then a user tool_result) is accepted.
async function tools(o, t) {
	const c = client(t);
	const { data, response } = await c.messages
		.create({ model: o.model, max_tokens: 256, system: SYSTEM,
			messages: MESSAGES, tools: TOOLS, tool_choice: { type: 'auto' } })
		.withResponse();
	check_headers(o, response, 'messages tools');
	check_message(data, 'message');
	const u = check_tool_use(data, 'message');
	const again = await c.messages.create({
		model: o.model, max_tokens: 256, system: SYSTEM, tools: TOOLS,
		messages: [...MESSAGES, { role: 'assistant', content: data.content },
			{ role: 'user', content: [{ type: 'tool_result', tool_use_id: u.id,
				content: '3 degrees, cloudy' }] }],
	});
	check_message(again, 'second turn');
	check(['end_turn', 'tool_use'].includes(again.stop_reason),
		`second turn stop_reason ${again.stop_reason}`);
}

// Run messages.stream; returns the raw event types, the text and input
// JSON deltas, the final message and the raw response.
async function streamed(o, t, extra) {
	const s = client(t).messages.stream({ model: o.model, max_tokens: 256,
		system: SYSTEM, messages: MESSAGES, ...extra });
	const r = { types: [], text: '', json: '', final: null, response: null };
	s.on('streamEvent', (ev) => r.types.push(ev.type));
	s.on('text', (d) => { r.text += d; });
	s.on('inputJson', (d) => { r.json += d; });
	r.response = (await s.withResponse()).response;
	r.final = await s.finalMessage();
	return r;
}

// Check the raw event order of a stream with one content block.
function check_events(types, what) {
	check(types[0] === 'message_start', `${what}: first event ${types[0]}`);
	check(types.at(-1) === 'message_stop',
		`${what}: last event ${types.at(-1)}, want message_stop (${show(types)})`);
	check_order(types, ['message_start', 'content_block_start',
		'content_block_delta', 'content_block_stop', 'message_delta',
		'message_stop'], `${what}: event order`);
}

// messages.stream: text events spell the answer; finalMessage() agrees.
async function stream(o, t) {
	const r = await streamed(o, t, {});
	check_headers(o, r.response, 'messages stream');
	check((r.response.headers.get('content-type') ?? '').startsWith('text/event-stream'),
		`content-type ${r.response.headers.get('content-type')}`);
	check_events(r.types, 'stream');
	check_text(o, r.text, 'text events');
	check_message(r.final, 'finalMessage()');
	eq(text_of(r.final), r.text, 'finalMessage() text');
	eq(r.final.stop_reason, 'end_turn', 'finalMessage() stop_reason');
}

// messages.stream with a tool: input_json deltas build the tool_use input.
async function stream_tools(o, t) {
	const r = await streamed(o, t, { tools: TOOLS });
	check_headers(o, r.response, 'messages tools stream');
	check_events(r.types, 'tools stream');
	check_message(r.final, 'finalMessage()');
	check_tool_use(r.final, 'finalMessage()');
	check_args(r.json, 'joined input_json deltas');
}

// client.beta.messages.create with a beta flag: the SDK's beta path
// (anthropic-beta header; some SDK versions add ?beta=true) is served too.
async function beta(o, t) {
	const { data, response } = await client(t).beta.messages
		.create({ model: o.model, max_tokens: 256, messages: MESSAGES,
			betas: [BETA] })
		.withResponse();
	check_headers(o, response, 'beta messages');
	check_message(data, 'beta message');
	check_text(o, text_of(data), 'beta text');
}

// llmf-mock counts COUNT_BASE + the bytes of the body it got; llmfd's
// estimate of this small request is far below.
const COUNT_BASE = 10000;

// messages.countTokens. With --served-by D the Anthropic upstream D counts
// (x-llmfd-deployment D, the mock's count); without, the group has none
// and llmfd answers its estimate (x-llmfd-deployment: estimate,
// x-llmfd-provider: llmfd, no attempt).
async function count_tokens(o, t) {
	const { data, response } = await client(t).messages
		.countTokens({ model: o.model, system: SYSTEM, messages: MESSAGES,
			tools: TOOLS })
		.withResponse();
	if (o.servedBy) {
		check_headers(o, response, 'count_tokens');
		count(data.input_tokens, 'input_tokens (the upstream\'s count)',
			COUNT_BASE);
		return;
	}
	check_headers(o, response, 'count_tokens', { deployment: false });
	count(data.input_tokens, 'input_tokens', 1);
	check(data.input_tokens < COUNT_BASE,
		`input_tokens ${data.input_tokens}: an upstream's count, not the estimate`);
	if (o.direct)
		return;
	eq(response.headers.get('x-llmfd-deployment'), 'estimate',
		'count_tokens: x-llmfd-deployment');
	eq(response.headers.get('x-llmfd-provider'), 'llmfd',
		'count_tokens: x-llmfd-provider');
}

// Run a request that must fail; returns the SDK's error.
async function must_fail(p, what) {
	try {
		await p;
	} catch (e) {
		check(e instanceof Anthropic.APIError, `${what}: want an APIError, got ${e}`);
		check(e.error?.type === 'error' && e.error?.error?.message,
			`${what}: not Anthropic's error shape: ${show(e.error)}`);
		return e;
	}
	throw new Error(`${what}: the request succeeded`);
}

// Errors in Anthropic's shape: an unknown model is 404 not_found_error;
// with --model naming a group whose every deployment is down, 529
// overloaded_error (the SDK would retry it; here maxRetries is 0).
async function errors(o, t) {
	const c = client(t);
	let e = await must_fail(c.messages.create({ model: 'no-such-model-xyz',
		max_tokens: 16, messages: MESSAGES }), 'unknown model');
	check(e instanceof Anthropic.NotFoundError, `unknown model: got ${e}`);
	eq(e.type, 'not_found_error', 'unknown model: error.type');
	if (!o.direct)
		check(e.headers.get('x-request-id'), 'error: no x-request-id');
	e = await must_fail(c.messages.create({ model: o.model, max_tokens: 16,
		messages: MESSAGES }), 'all down');
	eq(e.status, 529, 'all down: status');
	eq(e.type, 'overloaded_error', 'all down: error.type');
}

await run({ create, tools, stream, 'stream-tools': stream_tools,
	beta, 'count-tokens': count_tokens, errors }, 'claude-sonnet-4-5');
