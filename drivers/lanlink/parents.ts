// Which cnmd networks hang on which parent link, shared by the macvlan and
// ipvlan drivers: a parent carries children of one kind only (the kernel
// gives a device's receive hook to one of them: libnetwork PR#964), a
// passthru network has its parent to itself, and any number of other
// networks may share one (moby#47318).
import { CnmdError } from '../../src/errors';
import type { LanKind } from './config';

export interface ParentUse {
  networkId: string;
  kind: LanKind;
  parent: string;
  mode: string;
  exclusive: boolean;
}

const short = (id: string) => id.slice(0, 12);

export class ParentTable {
  private readonly uses = new Map<string, ParentUse>();

  /** The networks on this parent (other than `except`). */
  on(parent: string, except?: string): ParentUse[] {
    return [...this.uses.values()].filter((u) => u.parent === parent && u.networkId !== except);
  }

  /** Refuses a network whose parent is taken in a way it cannot share. */
  check(op: string, want: ParentUse): void {
    const others = this.on(want.parent, want.networkId);
    const other = others.find((u) => u.kind !== want.kind);
    if (other)
      throw new CnmdError(
        'CONFLICT',
        `${op}: parent ${want.parent} carries ${other.kind} network ${short(other.networkId)}; macvlan and ipvlan networks cannot share a parent: pick another parent (or an 802.1Q sub-interface such as ${want.parent}.10)`,
        { op, object: want.parent },
      );
    const passthru = others.find((u) => u.exclusive);
    if (passthru)
      throw new CnmdError(
        'CONFLICT',
        `${op}: parent ${want.parent} is in use by passthru network ${short(passthru.networkId)}, which takes the whole device: remove it or pick another parent`,
        { op, object: want.parent },
      );
    if (want.exclusive && others.length)
      throw new CnmdError(
        'CONFLICT',
        `${op}: ${want.mode} mode takes the whole parent, and ${want.parent} already carries network ${short(others[0].networkId)}: remove it or pick another parent`,
        { op, object: want.parent },
      );
  }

  add(use: ParentUse): void {
    this.uses.set(use.networkId, use);
  }

  remove(networkId: string): void {
    this.uses.delete(networkId);
  }

  get(networkId: string): ParentUse | undefined {
    return this.uses.get(networkId);
  }
}
