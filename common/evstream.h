/* The AWS event stream binary framing (application/vnd.amazon.eventstream)
 * decoded incrementally: each message is a 12-byte prelude (total length,
 * headers length, prelude CRC32), headers, a payload and a message CRC32,
 * all big-endian. Bytes in, whole checked messages out. */
#ifndef LLMFD_EVSTREAM_H
#define LLMFD_EVSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define EVS_PRELUDE     12
#define EVS_MIN_MSG     16          /* prelude + message CRC */
#define EVS_MAX_HEADERS (128 << 10) /* as botocore */
#define EVS_MAX_PAYLOAD (16 << 20)  /* as botocore */
#define EVS_MAX_NAME    255

/* A string header of a message (type 7), pointing into the message. */
struct evs_str {
	const char *p;
	size_t n;
};

/* One decoded message: the headers llmfd acts on, and the payload. Every
 * pointer is valid only during the callback. */
struct evs_msg {
	struct evs_str message_type;   /* ":message-type": event, exception,
	                                  error */
	struct evs_str event_type;     /* ":event-type" */
	struct evs_str exception_type; /* ":exception-type" */
	struct evs_str error_code;     /* ":error-code" */
	struct evs_str error_message;  /* ":error-message" */
	struct evs_str content_type;   /* ":content-type" */
	int nheaders;
	const char *payload;
	size_t plen;
};

struct evs {
	struct buf msg; /* the message being assembled */
	size_t need;    /* its total length once the prelude is in, else 0 */
	char err[96];   /* why the last feed failed */
};

/* Called per complete message; non-zero stops feeding. */
typedef int (*evs_cb)(void *arg, const struct evs_msg *);

/* Feed bytes. Returns 0, the callback's non-zero value if it stopped, or
 * -1 when the stream is malformed (a bad CRC, lengths out of bounds, a bad
 * header, one of the headers above twice) or memory ran out, with the reason in
 * err. After -1 the decoder must be reset before it is used again. */
int evs_feed(struct evs *, const char *p, size_t n, evs_cb, void *arg);
/* Whether bytes of an unfinished message are held (a stream that ends now
 * was cut mid-message). */
int evs_pending(const struct evs *);
/* The cap on one whole message (default: the largest botocore allows). */
void evs_set_max(size_t);
void evs_reset(struct evs *);
void evs_free(struct evs *);
/* Free the buffer while no message is half read (a stream between
 * messages holds none). */
void evs_shrink(struct evs *);

/* CRC-32 (IEEE 802.3, as zlib's crc32) of n bytes, continuing from crc
 * (0 to start). */
uint32_t evs_crc32(uint32_t crc, const void *p, size_t n);

/* A string header for evs_encode. */
struct evs_hdr {
	const char *name;
	const char *value;
};
/* Append one message with string headers (nh of them) and a payload. */
void evs_encode(struct buf *out, const struct evs_hdr *, int nh,
                const void *payload, size_t plen);

#endif
