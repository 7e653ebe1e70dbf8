/*
 * stats.c - shoald's counters, the Stats reply, and its log lines.
 *
 * Everything here runs on the loop's thread (the only thread), so the
 * counters are plain integers. Counting costs an array increment per
 * request; errors are kept as (code, count) pairs found by a linear search
 * over the few distinct codes seen, which is only walked on failures.
 *
 * Log format, one line per event on stderr (the supervisor's journal):
 *   2024-05-01T12:00:00.123Z shoald[1234]: event key=value ...
 * Client-caused events (protocol errors, denied peers) go through
 * broker_log_limited, which allows a burst of BROKER_LOG_BURST lines per
 * second and then counts what it dropped, so a misbehaving client can not
 * flood the log or slow the loop with write(2)s to a slow journal.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker-internal.h"

#define BROKER_LOG_BURST 20

uint64_t broker_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t broker_mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void vlog(const char *fmt, va_list ap) {
  char line[2048];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
  n += snprintf(line + n, sizeof line - (size_t)n, ".%03ldZ shoald[%d]: ",
                ts.tv_nsec / 1000000, (int)getpid());
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  if (m < 0) m = 0;
  n += m;
  if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  /* one write per line: lines from a restarted broker and its predecessor
   * never interleave mid-line in a shared log */
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}

void broker_log(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(fmt, ap);
  va_end(ap);
}

void broker_log_limited(const char *fmt, ...) {
  static uint64_t window_ms, in_window, dropped;
  uint64_t now = broker_mono_ms();
  if (now - window_ms >= 1000) {
    if (dropped)
      broker_log("log_suppressed lines=%llu reason=\"more than %d client "
                 "events per second\"",
                 (unsigned long long)dropped, BROKER_LOG_BURST);
    window_ms = now;
    in_window = 0;
    dropped = 0;
  }
  if (++in_window > BROKER_LOG_BURST) {
    dropped++;
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vlog(fmt, ap);
  va_end(ap);
}

static const char *const req_names[BROKER_REQ__COUNT] = {
    [BROKER_REQ_UNKNOWN] = "unknown",     [BROKER_REQ_HELLO] = "hello",
    [BROKER_REQ_PUT] = "put",             [BROKER_REQ_DELETE] = "delete",
    [BROKER_REQ_CAS] = "cas",             [BROKER_REQ_BATCH] = "batch",
    [BROKER_REQ_GET] = "get",             [BROKER_REQ_SCAN] = "scan",
    [BROKER_REQ_STATS] = "stats",         [BROKER_REQ_PING] = "ping",
    [BROKER_REQ_HASH_FILE] = "hash_file", [BROKER_REQ_TAIL_LOG] = "tail_log",
    [BROKER_REQ_CANCEL] = "cancel",
};

const char *broker_req_name(int type) {
  if (type < 0 || type >= BROKER_REQ__COUNT) return "unknown";
  return req_names[type];
}

void broker_count_error(struct broker *b, int code) {
  struct broker_stats *st = &b->stats;
  for (unsigned i = 0; i < st->n_errors; i++) {
    if (st->errors[i].code == code) {
      st->errors[i].n++;
      return;
    }
  }
  if (st->n_errors < BROKER_ERR_SLOTS) {
    st->errors[st->n_errors].code = code;
    st->errors[st->n_errors].n = 1;
    st->n_errors++;
  } else {
    st->errors_other++;
  }
}

/* The wire name of an error code: "SHOAL_ENOTFOUND" for shoal's own band
 * (as shoal.proto's StatsReply.errors documents), the errno name
 * ("ENOMEM") for -errno. */
static void err_name(int code, char *buf, size_t cap) {
  if (code <= SHOAL__EBASE)
    snprintf(buf, cap, "SHOAL_%s", shoal_errname(code));
  else
    snprintf(buf, cap, "%s", shoal_errname(code));
}

void broker_fill_stats(struct broker *b, Shoal__StatsReply *r,
                       Shoal__Counter *req_counters, Shoal__Counter **req_ptrs,
                       Shoal__Counter *err_counters, Shoal__Counter **err_ptrs,
                       char (*names)[24]) {
  shm_stats st;
  shm_store_stats(b->store, &st);
#define SET(f, v)                                                              \
  do {                                                                         \
    r->has_##f = 1;                                                            \
    r->f = (v);                                                                \
  } while (0)
  SET(keys, st.keys);
  SET(key_bytes, st.key_bytes);
  SET(value_bytes, st.value_bytes);
  SET(size, st.size);
  SET(bytes_used, st.heap_used);
  SET(bytes_free, st.size > st.heap_used ? st.size - st.heap_used : 0);
  SET(commit_seq, st.commit_seq);
  SET(commits, st.commits);
  SET(records, st.records);
  SET(retired, st.retired);
  SET(retired_bytes, st.retired_bytes);
  SET(reclaimed, st.reclaimed);
  SET(expired, st.expired);
  SET(index_capacity, st.index_capacity);
  SET(index_used, st.index_used);
  SET(readers_claimed, st.readers_claimed);
  SET(readers_busy, st.readers_busy);
  SET(oldest_snapshot, st.oldest_snapshot);
  SET(oldest_snapshot_age_ms, st.oldest_snapshot_age_ms);
  SET(connections, b->nconns);
  SET(connections_total, b->stats.connections_total);
  SET(uptime_ms, broker_mono_ms() - b->start_ms);
  SET(broker_pid, (int32_t)b->pid);
  SET(denied, b->stats.denied);
  SET(bytes_in, b->stats.bytes_in);
  SET(bytes_out, b->stats.bytes_out);
#undef SET
  broker_files_stats(b, r);
  size_t n = 0;
  for (int t = 0; t < BROKER_REQ__COUNT; t++) {
    if (!b->stats.requests[t]) continue;
    shoal__counter__init(&req_counters[n]);
    req_counters[n].name = (char *)req_names[t];
    req_counters[n].has_value = 1;
    req_counters[n].value = b->stats.requests[t];
    req_ptrs[n] = &req_counters[n];
    n++;
  }
  r->n_requests = n;
  r->requests = req_ptrs;
  n = 0;
  for (unsigned i = 0; i < b->stats.n_errors; i++) {
    shoal__counter__init(&err_counters[n]);
    err_name(b->stats.errors[i].code, names[n], sizeof names[n]);
    err_counters[n].name = names[n];
    err_counters[n].has_value = 1;
    err_counters[n].value = b->stats.errors[i].n;
    err_ptrs[n] = &err_counters[n];
    n++;
  }
  if (b->stats.errors_other) {
    shoal__counter__init(&err_counters[n]);
    err_counters[n].name = "other";
    err_counters[n].has_value = 1;
    err_counters[n].value = b->stats.errors_other;
    err_ptrs[n] = &err_counters[n];
    n++;
  }
  r->n_errors = n;
  r->errors = err_ptrs;
}

void broker_log_stats(struct broker *b, const char *event) {
  shm_stats st;
  shm_store_stats(b->store, &st);
  char reqs[512] = "", errs[512] = "";
  size_t n = 0;
  for (int t = 0; t < BROKER_REQ__COUNT && n < sizeof reqs; t++) {
    if (!b->stats.requests[t]) continue;
    n += (size_t)snprintf(reqs + n, sizeof reqs - n, "%s%s:%llu", n ? "," : "",
                          req_names[t],
                          (unsigned long long)b->stats.requests[t]);
  }
  n = 0;
  for (unsigned i = 0; i < b->stats.n_errors && n < sizeof errs; i++) {
    char nm[24];
    err_name(b->stats.errors[i].code, nm, sizeof nm);
    n += (size_t)snprintf(errs + n, sizeof errs - n, "%s%s:%llu", n ? "," : "",
                          nm, (unsigned long long)b->stats.errors[i].n);
  }
  broker_log(
      "%s keys=%llu commit_seq=%llu commits=%llu bytes_used=%llu size=%llu "
      "retired_bytes=%llu expired=%llu readers_claimed=%llu readers_busy=%llu "
      "oldest_snapshot_age_ms=%llu connections=%llu connections_total=%llu "
      "denied=%llu bytes_in=%llu bytes_out=%llu uptime_ms=%llu "
      "requests=%s errors=%s",
      event, (unsigned long long)st.keys, (unsigned long long)st.commit_seq,
      (unsigned long long)st.commits, (unsigned long long)st.heap_used,
      (unsigned long long)st.size, (unsigned long long)st.retired_bytes,
      (unsigned long long)st.expired, (unsigned long long)st.readers_claimed,
      (unsigned long long)st.readers_busy,
      (unsigned long long)st.oldest_snapshot_age_ms,
      (unsigned long long)b->nconns,
      (unsigned long long)b->stats.connections_total,
      (unsigned long long)b->stats.denied,
      (unsigned long long)b->stats.bytes_in,
      (unsigned long long)b->stats.bytes_out,
      (unsigned long long)(broker_mono_ms() - b->start_ms),
      reqs[0] ? reqs : "-", errs[0] ? errs : "-");
}
