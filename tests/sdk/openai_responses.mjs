// The official `openai` npm client, unmodified, against llmfd's
// POST /v1/responses: plain, streamed (every event, sequence numbers,
// response.completed last), with a function tool (and its output sent back
// as input items), streamed with a tool, and the errors llmfd promises (an
// unknown model, previous_response_id). Usage: see lib.mjs (default model
// gpt-4o).
import OpenAI from 'openai';
import { run, check, eq, count, check_text, check_args, check_headers,
	check_order, show, WEATHER_SCHEMA } from './lib.mjs';

const TOOLS = [{
	type: 'function', name: 'get_weather', description: 'Weather in a city',
	parameters: WEATHER_SCHEMA, strict: false,
}];
const INPUT = [{ role: 'user', content: 'hi' }];

// A client on llmfd's /v1 that never retries by itself (llmfd does).
function client(t) {
	return new OpenAI({ apiKey: 'sk-llmfd-test', baseURL: `${t.root}/v1`,
		maxRetries: 0, timeout: 8000, fetchOptions: t.fetchOptions });
}

// Check a Response object's usage.
function check_usage(u, what) {
	check(u, `${what}: no usage`);
	count(u.input_tokens, `${what}: usage.input_tokens`);
	count(u.output_tokens, `${what}: usage.output_tokens`);
	eq(u.total_tokens, u.input_tokens + u.output_tokens, `${what}: usage.total_tokens`);
}

// Check a completed Response object; returns its output items.
function check_response(r, what) {
	eq(r.object, 'response', `${what}: object`);
	check(typeof r.id === 'string' && r.id, `${what}: id ${show(r.id)}`);
	eq(r.status, 'completed', `${what}: status`);
	check(Array.isArray(r.output) && r.output.length > 0,
		`${what}: output ${show(r.output)}`);
	check_usage(r.usage, what);
	return r.output;
}

// The text of a Response's message items.
function message_text(output, what) {
	const msgs = output.filter((i) => i.type === 'message');
	eq(msgs.length, 1, `${what}: message items`);
	eq(msgs[0].role, 'assistant', `${what}: message role`);
	return msgs[0].content.filter((p) => p.type === 'output_text')
		.map((p) => p.text).join('');
}

// Non-streamed: instructions + a string input; the SDK's output_text.
async function plain(o, t) {
	const { data, response, request_id } = await client(t).responses
		.create({ model: o.model, instructions: 'Be brief.', input: 'hi',
			max_output_tokens: 64, store: false })
		.withResponse();
	check_headers(o, response, 'responses');
	if (!o.direct)
		eq(request_id, response.headers.get('x-request-id'), 'SDK request_id');
	const out = check_response(data, 'response');
	check_text(o, message_text(out, 'response'), 'message text');
	check_text(o, data.output_text, 'SDK output_text');
}

// Read a Responses event stream: types, the text and argument deltas, the
// .done events' values and the terminal response.
async function read_events(stream) {
	const s = { types: [], text: '', args: '', done_text: null, done_args: null,
		added: [], items: [], final: null, after_final: 0 };
	let seq = null;
	for await (const ev of stream) {
		if (s.final)
			s.after_final++;
		s.types.push(ev.type);
		count(ev.sequence_number, `${ev.type}: sequence_number`);
		if (seq !== null)
			eq(ev.sequence_number, seq + 1, `${ev.type}: sequence_number`);
		seq = ev.sequence_number;
		switch (ev.type) {
		case 'response.output_text.delta': s.text += ev.delta; break;
		case 'response.output_text.done': s.done_text = ev.text; break;
		case 'response.function_call_arguments.delta': s.args += ev.delta; break;
		case 'response.function_call_arguments.done': s.done_args = ev; break;
		case 'response.output_item.added': s.added.push(ev.item); break;
		case 'response.output_item.done': s.items.push(ev.item); break;
		case 'response.completed': s.final = ev.response; break;
		case 'response.failed':
		case 'response.incomplete':
		case 'error':
			throw new Error(`stream ended with ${ev.type}: ${show(ev)}`);
		}
	}
	check(s.types[0] === 'response.created', `first event ${s.types[0]}, want response.created`);
	check(s.final, `no response.completed in ${show(s.types)}`);
	eq(s.after_final, 0, 'events after response.completed');
	return s;
}

// Streamed: every event in order, deltas = done text = completed text.
async function stream(o, t) {
	const { data, response } = await client(t).responses
		.create({ model: o.model, input: INPUT, stream: true })
		.withResponse();
	check_headers(o, response, 'responses stream');
	check((response.headers.get('content-type') ?? '').startsWith('text/event-stream'),
		`content-type ${response.headers.get('content-type')}`);
	const s = await read_events(data);
	check_order(s.types, ['response.created', 'response.in_progress',
		'response.output_item.added', 'response.content_part.added',
		'response.output_text.delta', 'response.output_text.done',
		'response.content_part.done', 'response.output_item.done',
		'response.completed'], 'event order');
	check_text(o, s.text, 'joined output_text.delta');
	eq(s.done_text, s.text, 'output_text.done text');
	eq(s.added[0]?.type, 'message', 'output_item.added item type');
	const out = check_response(s.final, 'response.completed');
	eq(message_text(out, 'response.completed'), s.text, 'response.completed text');
	eq(message_text(s.items, 'output_item.done'), s.text, 'output_item.done text');
}

// Check a function_call output item.
function check_call(item, what) {
	eq(item?.type, 'function_call', `${what}: type`);
	eq(item.name, 'get_weather', `${what}: name`);
	check(typeof item.call_id === 'string' && item.call_id, `${what}: call_id ${show(item)}`);
	check_args(item.arguments, `${what}: arguments`);
}

// A function tool: a function_call output item; its output sent back as
// input items (the call, then function_call_output) is accepted.
async function tools(o, t) {
	const c = client(t);
	const { data, response } = await c.responses
		.create({ model: o.model, input: INPUT, tools: TOOLS, tool_choice: 'auto' })
		.withResponse();
	check_headers(o, response, 'responses tools');
	const out = check_response(data, 'response');
	const calls = out.filter((i) => i.type === 'function_call');
	eq(calls.length, 1, `function_call items in ${show(out)}`);
	check_call(calls[0], 'function_call');
	const again = await c.responses.create({
		model: o.model, tools: TOOLS,
		input: [...INPUT, ...out, { type: 'function_call_output',
			call_id: calls[0].call_id, output: '{"temp_c":3}' }],
	});
	check_response(again, 'second turn');
}

// Streamed with a tool: added item, argument deltas, done, completed.
async function stream_tools(o, t) {
	const { data, response } = await client(t).responses
		.create({ model: o.model, input: INPUT, tools: TOOLS, stream: true })
		.withResponse();
	check_headers(o, response, 'responses tools stream');
	const s = await read_events(data);
	check_order(s.types, ['response.created', 'response.output_item.added',
		'response.function_call_arguments.delta',
		'response.function_call_arguments.done', 'response.output_item.done',
		'response.completed'], 'event order');
	const added = s.added.find((i) => i.type === 'function_call');
	check(added, `no function_call in output_item.added: ${show(s.added)}`);
	eq(added.name, 'get_weather', 'output_item.added name');
	check_args(s.args, 'joined function_call_arguments.delta');
	eq(s.done_args?.arguments, s.args, 'function_call_arguments.done arguments');
	const item = s.items.find((i) => i.type === 'function_call');
	check_call(item, 'output_item.done');
	eq(item.call_id, added.call_id, 'output_item.done call_id');
	const fin = check_response(s.final, 'response.completed')
		.find((i) => i.type === 'function_call');
	check_call(fin, 'response.completed function_call');
	eq(fin.call_id, added.call_id, 'response.completed call_id');
}

// Errors: an unknown model (NotFoundError), previous_response_id (llmfd is
// stateless: 400 previous_response_not_found, never a silent answer).
async function errors(o, t) {
	const c = client(t);
	let err = null;
	try {
		await c.responses.create({ model: 'no-such-model-xyz', input: 'hi' });
	} catch (e) {
		err = e;
	}
	check(err instanceof OpenAI.NotFoundError, `unknown model: want NotFoundError, got ${err}`);
	check(err.error?.message, `unknown model: error.message ${show(err.error)}`);
	err = null;
	try {
		await c.responses.create({ model: o.model, input: 'and then?',
			previous_response_id: 'resp_123' });
	} catch (e) {
		err = e;
	}
	check(err instanceof OpenAI.BadRequestError,
		`previous_response_id: want BadRequestError, got ${err}`);
	eq(err.code, 'previous_response_not_found', 'previous_response_id: error.code');
	if (!o.direct)
		check(err.headers.get('x-request-id'), 'error: no x-request-id');
}

await run({ plain, stream, tools, 'stream-tools': stream_tools, errors }, 'gpt-4o');
