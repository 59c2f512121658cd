// Latest wins: at most one request out at a time, and at most one more waiting, built from the newest state
// when it is sent. Old states are never queued.

export class LatestWins {
  /** send: an async function that asks for (and stores) the answer for the state as it is when called. */
  constructor(send) {
    this.send = send;
    this.inFlight = false;
    this.pending = false;
    this.waiters = [];
  }

  /** Ask for an answer for the current state; resolves once the answer for the newest state has arrived. */
  request() {
    return new Promise((resolve) => {
      this.waiters.push(resolve);
      if (this.inFlight) this.pending = true;
      else this.#next();
    });
  }

  /** Run task while no request is out; requests asked for meanwhile wait until the next request(). */
  async hold(task) {
    while (this.inFlight) await new Promise((resolve) => this.waiters.push(resolve));
    this.inFlight = true;
    try {
      return await task();
    } finally {
      this.inFlight = false;
    }
  }

  /** Send what is waiting, if anything. */
  flush() {
    if (this.pending && !this.inFlight) this.#next();
  }

  async #next() {
    const waiters = this.waiters;
    Object.assign(this, { inFlight: true, pending: false, waiters: [] });
    try {
      await this.send();
    } finally {
      this.inFlight = false;
      if (this.pending) { // a newer state is waiting: its answer is the one everybody waits for
        this.waiters.unshift(...waiters);
        this.#next();
      } else waiters.forEach((resolve) => resolve());
    }
  }
}
