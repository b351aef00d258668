/* llmfd: a local LLM failover daemon. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/log.h"
#include "common/slab.h"
#include "daemon/daemon.h"

static void __attribute__((noreturn)) usage(void)
{
	fprintf(
	    stderr,
	    "usage: llmfd [-dt] [-c config]\n"
	    "  -c FILE  configuration file (default /etc/llmfd/llmfd.conf)\n"
	    "  -t       check the configuration and exit\n"
	    "  -d       detach into the background (logs still go to "
	    "stderr)\n");
	exit(2);
}

/* Detach from the terminal. */
static void
daemonize(void)
{
	int fd;

	switch (fork()) {
	case -1:
		fatal("fork failed");
	case 0:
		break;
	default:
		_exit(0);
	}
	if (setsid() == -1)
		fatal("setsid failed");
	if ((fd = open("/dev/null", O_RDWR)) != -1) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		if (fd > 2)
			close(fd);
	}
}

/* Raise the open-file limit to the hard limit: every client and upstream
 * connection is a descriptor, and the soft default (often 1024) is hit by
 * a modest number of idle clients. Workers inherit it. */
static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
		log_warn("setrlimit(RLIMIT_NOFILE, %llu) failed",
		         (unsigned long long)rl.rlim_max);
}

int
main(int argc, char **argv)
{
	static struct master m;
	const char *conf = "/etc/llmfd/llmfd.conf";
	char *cause = NULL;
	int ch, test = 0, detach = 0;

	while ((ch = getopt(argc, argv, "c:dth")) != -1) {
		switch (ch) {
		case 'c':
			conf = optarg;
			break;
		case 'd':
			detach = 1;
			break;
		case 't':
			test = 1;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	slab_use_for_libevent();
	log_init(LOG_LVL_INFO, "llmfd");
	if ((m.cfg = cfg_load(conf, &cause)) == NULL) {
		if (test)
			printf("%s\n", cause ? cause : "cannot load config");
		else
			log_raw("%s", cause ? cause : "cannot load config");
		free(cause);
		return 1;
	}
	if (test) {
		printf("configuration OK\n");
		cfg_free(m.cfg);
		return 0;
	}
	snprintf(m.conf_path, sizeof m.conf_path, "%s", conf);
	log_init(m.cfg->log_level, "llmfd");
	raise_nofile();
	if (detach)
		daemonize();
	return master_run(&m);
}
