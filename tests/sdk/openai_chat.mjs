// The official `openai` npm client, unmodified, against llmfd's
// POST /v1/chat/completions: plain, streamed, with a function tool (and the
// tool result sent back), streamed with a tool, and an unknown model.
// Usage: see lib.mjs (default model gpt-4o).
import OpenAI from 'openai';
import { run, check, eq, count, check_text, check_args, check_headers, show,
	WEATHER_SCHEMA } from './lib.mjs';

const TOOLS = [{
	type: 'function',
	function: { name: 'get_weather', description: 'Weather in a city',
		parameters: WEATHER_SCHEMA },
}];
const MESSAGES = [
	{ role: 'system', content: 'Be brief.' },
	{ role: 'user', content: 'hi' },
];

// A client on llmfd's /v1 that never retries by itself (llmfd does).
function client(t) {
	return new OpenAI({ apiKey: 'sk-llmfd-test', baseURL: `${t.root}/v1`,
		maxRetries: 0, timeout: 8000, fetchOptions: t.fetchOptions });
}

// Check usage of a chat.completion (or the usage chunk).
function check_usage(u, what) {
	check(u, `${what}: no usage`);
	count(u.prompt_tokens, `${what}: usage.prompt_tokens`);
	count(u.completion_tokens, `${what}: usage.completion_tokens`);
	eq(u.total_tokens, u.prompt_tokens + u.completion_tokens,
		`${what}: usage.total_tokens`);
}

// Non-streamed: the whole answer, headers and the SDK's request id.
async function plain(o, t) {
	const { data, response, request_id } = await client(t).chat.completions
		.create({ model: o.model, messages: MESSAGES, max_tokens: 64 })
		.withResponse();
	check_headers(o, response, 'chat');
	if (!o.direct)
		eq(request_id, response.headers.get('x-request-id'), 'SDK request_id');
	eq(data.object, 'chat.completion', 'object');
	check(typeof data.id === 'string' && data.id, `id: ${show(data.id)}`);
	eq(data.choices.length, 1, 'choices');
	eq(data.choices[0].message.role, 'assistant', 'role');
	check_text(o, data.choices[0].message.content, 'content');
	eq(data.choices[0].finish_reason, 'stop', 'finish_reason');
	check_usage(data.usage, 'chat');
}

// Read a chat stream: text, tool calls by index, finish reasons, usage.
async function read_stream(stream) {
	const s = { text: '', calls: [], finish: [], usage: null, chunks: 0 };
	for await (const ch of stream) {
		s.chunks++;
		eq(ch.object, 'chat.completion.chunk', `chunk ${s.chunks} object`);
		if (ch.usage)
			s.usage = ch.usage;
		for (const c of ch.choices) {
			if (c.delta?.content)
				s.text += c.delta.content;
			for (const tc of c.delta?.tool_calls ?? []) {
				const call = (s.calls[tc.index] ??= { id: '', name: '', args: '' });
				call.id += tc.id ?? '';
				call.name += tc.function?.name ?? '';
				call.args += tc.function?.arguments ?? '';
			}
			if (c.finish_reason)
				s.finish.push(c.finish_reason);
		}
	}
	return s;
}

// Streamed with usage: the deltas spell the answer, one finish reason.
async function stream(o, t) {
	const { data, response } = await client(t).chat.completions
		.create({ model: o.model, messages: MESSAGES, stream: true,
			stream_options: { include_usage: true } })
		.withResponse();
	check_headers(o, response, 'chat stream');
	check((response.headers.get('content-type') ?? '').startsWith('text/event-stream'),
		`content-type ${response.headers.get('content-type')}`);
	const s = await read_stream(data);
	check_text(o, s.text, 'streamed text');
	eq(s.finish, ['stop'], 'finish reasons');
	eq(s.calls.length, 0, 'tool calls');
	check_usage(s.usage, 'chat stream');
}

// Check one tool call of an answer (id, name, arguments).
function check_call(call, what) {
	check(call && typeof call.id === 'string' && call.id, `${what}: id ${show(call)}`);
	eq(call.name, 'get_weather', `${what}: name`);
	check_args(call.args, `${what}: arguments`);
}

// A function tool: the answer calls it; the tool result sent back in a
// second turn (assistant tool_calls + role tool) is accepted.
async function tools(o, t) {
	const c = client(t);
	const { data, response } = await c.chat.completions
		.create({ model: o.model, messages: MESSAGES, tools: TOOLS,
			tool_choice: 'auto' })
		.withResponse();
	check_headers(o, response, 'tools');
	const m = data.choices[0].message;
	eq(data.choices[0].finish_reason, 'tool_calls', 'finish_reason');
	check(Array.isArray(m.tool_calls) && m.tool_calls.length === 1,
		`tool_calls: ${show(m.tool_calls)}`);
	const tc = m.tool_calls[0];
	eq(tc.type, 'function', 'tool_calls[0].type');
	check_call({ id: tc.id, name: tc.function.name, args: tc.function.arguments },
		'tool call');
	const again = await c.chat.completions.create({
		model: o.model, tools: TOOLS,
		messages: [...MESSAGES, m,
			{ role: 'tool', tool_call_id: tc.id, content: '{"temp_c":3}' }],
	});
	eq(again.object, 'chat.completion', 'second turn object');
	check(['stop', 'tool_calls'].includes(again.choices[0].finish_reason),
		`second turn finish_reason ${again.choices[0].finish_reason}`);
}

// Streamed with a tool: the call's pieces join into the whole call.
async function stream_tools(o, t) {
	const { data, response } = await client(t).chat.completions
		.create({ model: o.model, messages: MESSAGES, tools: TOOLS, stream: true })
		.withResponse();
	check_headers(o, response, 'tools stream');
	const s = await read_stream(data);
	eq(s.calls.length, 1, 'streamed tool calls');
	check_call(s.calls[0], 'streamed tool call');
	eq(s.finish, ['tool_calls'], 'finish reasons');
}

// An unknown model: the SDK's NotFoundError, OpenAI-shaped, with a request id.
async function errors(o, t) {
	let err = null;
	try {
		await client(t).chat.completions.create({ model: 'no-such-model-xyz',
			messages: MESSAGES });
	} catch (e) {
		err = e;
	}
	check(err instanceof OpenAI.NotFoundError, `want NotFoundError, got ${err}`);
	check(typeof err.error?.message === 'string' && err.error.message,
		`error.message: ${show(err.error)}`);
	if (!o.direct)
		check(err.headers.get('x-request-id'), 'error: no x-request-id');
}

await run({ plain, stream, tools, 'stream-tools': stream_tools, errors }, 'gpt-4o');
