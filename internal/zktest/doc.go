// Package zktest runs private ZooKeeper servers for tests: Debian's
// zookeeper package (Java) started standalone on a free loopback port,
// with its data and configuration in a temporary directory, as
//
//	java -cp /usr/share/java/zookeeper.jar org.apache.zookeeper.server.quorum.QuorumPeerMain zoo.cfg
//
// (the jar's manifest names the other jars it needs). It answers in about
// a second. ClickHouse's replicated tables need it (see internal/chtest's
// cluster).
//
// When Java or the jar is missing, [Binary] says how to install them; the
// harnesses that use this package skip or fail their tests as
// internal/testsrv describes.
package zktest
