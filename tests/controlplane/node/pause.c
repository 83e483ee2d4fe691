/* The pod sandbox's process (what registry.k8s.io/pause runs): holds the pod's namespaces,
 * reaps orphans, exits on SIGINT/SIGTERM. Compiled static by node.py into a local image. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signo) { (void)signo; _exit(0); }

static void reap(int signo) {
	(void)signo;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(void) {
	struct sigaction stopping = {.sa_handler = stop};
	struct sigaction reaping = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
	sigaction(SIGINT, &stopping, NULL);
	sigaction(SIGTERM, &stopping, NULL);
	sigaction(SIGCHLD, &reaping, NULL);
	for (;;) pause();
	return 1;
}
