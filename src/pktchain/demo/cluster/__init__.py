"""`pktchain demo cluster`: one service chain across three pktchain nodes.

Three nodes, each a namespace of its own on the lab's underlay (with the
lab's etcd), carry one symmetric chain from a client on n1 to a server on n3:

    client (n1) → firewall {fw1 on n1, fw2 on n2}
                → appliance {sf2 on n2, sf3 on n3}
                → nsh-flowcount (C, NSH-aware, on n3) → server (n3)

The firewall is a native function (kind `firewall`, from a functions file);
it has a second instance on n1 so that killing n2 leaves every group an
instance.  The appliance is an SFC-unaware Linux host that routes between
its two interfaces, in two replicas.  nsh-flowcount is the C example of an
NSH-aware function, in a host of its own with two interfaces on n3.  Between
the nodes the chain travels as NSH over VXLAN-GPE, and a flow's replies come
back through the very instances its packets took.

The demo brings the lab and the three nodes up, creates the chain through
n1's REST API (with a token, from the lab's fabric namespace), sends HTTP and
iperf3 through it, checks that the replies crossed the same instances (flow
tables and per-hop counters of every node, nsh-flowcount's own counters),
then kills n2 with SIGKILL while probe connections run and measures how soon
their flows are re-pinned to fw1 and sf3; HTTP and iperf3 must still work
after.  It prints every node's per-hop counters, stops the nodes, removes
everything it made, and exits 0 only when every step held.
"""

from pktchain.demo.cluster.walk import run_cluster_demo

__all__ = ["run_cluster_demo"]
