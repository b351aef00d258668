/* Logging after OpenBSD log.c: stderr, one line per message, level-checked
 * before formatting, repeats rate-limited. Never log keys or request
 * bodies (configured secrets are masked anyway: common/secret.h). */
#ifndef LLMFD_LOG_H
#define LLMFD_LOG_H

#include <stdarg.h>

#define LOG_LVL_ERROR 0
#define LOG_LVL_WARN  1
#define LOG_LVL_INFO  2
#define LOG_LVL_DEBUG 3

extern int log_level;

void log_init(int level, const char *progname);
void log_procinit(const char *procname);
int log_parse_level(const char *); /* -1 if unknown */
const char *log_level_name(int);
void log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_raw(const char *, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));
/* A line repeated within a second is written once; the repeats are counted
 * and reported with its next line, or by log_tick (call it once a second)
 * when they stop. */
void log_tick(void);

#define log_enabled(lvl) (log_level >= (lvl))

#endif
