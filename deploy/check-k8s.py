#!/usr/bin/env python3
"""Cross-checks of deploy/k8s that a schema validator cannot make.

Which pods each selector takes (the Deployment, StatefulSet, PodDisruptionBudget, Service and the
NetworkPolicies must not take each other's pods, nor the migration Job's), that the names the
manifests refer to exist (ConfigMaps, the Secret and its DATABASE_URL key, the StatefulSet's
claim the Job mounts), that the Deployment has the StatefulSet's probes and security settings,
and that the two ConfigMaps hold the same config but for `store:`.

    python3 deploy/check-k8s.py            # needs PyYAML; prints one line per check, exit 1 on a failure

Schemas: `kubernetes-validate --strict -k 1.32.0 deploy/k8s/*.yaml deploy/k8s/*/*.yaml` (PyPI).
"""
import glob, os, sys, yaml
root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), 'k8s')
docs = {}
for f in sorted(glob.glob(root + '/**/*.yaml', recursive=True)):
    for d in yaml.safe_load_all(open(f)):
        docs[(d['kind'], d['metadata']['name'])] = d
def matches(sel, labels):
    return all(labels.get(k) == v for k, v in sel.items())
sts = docs[('StatefulSet', 'clinicea-notifier')]
dep = docs[('Deployment', 'clinicea-notifier')]
job = docs[('Job', 'clinicea-notifier-migrate-store')]
pdb = docs[('PodDisruptionBudget', 'clinicea-notifier')]
svc = docs[('Service', 'clinicea-notifier')]
np_base = docs[('NetworkPolicy', 'clinicea-notifier')]
np_pg = docs[('NetworkPolicy', 'clinicea-notifier-postgres')]
pods = {n: w['spec']['template']['metadata']['labels'] for n, w in [('sts', sts), ('dep', dep), ('job', job)]}
ok = True
def expect(cond, what):
    global ok
    print(('ok   ' if cond else 'FAIL ') + what); ok &= bool(cond)
expect(matches(dep['spec']['selector']['matchLabels'], pods['dep']), 'Deployment selector matches its template')
expect(not matches(dep['spec']['selector']['matchLabels'], pods['sts']), 'Deployment selector does not take the StatefulSet pod')
expect(not matches(dep['spec']['selector']['matchLabels'], pods['job']), 'Deployment selector does not take the Job pod')
expect(not matches(sts['spec']['selector']['matchLabels'], pods['job']), 'StatefulSet selector does not take the Job pod')
expect(matches(pdb['spec']['selector']['matchLabels'], pods['dep']), 'PDB selects the Deployment pods')
expect(not matches(pdb['spec']['selector']['matchLabels'], pods['sts']) and not matches(pdb['spec']['selector']['matchLabels'], pods['job']), 'PDB selects neither the StatefulSet nor the Job pod')
expect(matches(svc['spec']['selector'], pods['dep']) and matches(svc['spec']['selector'], pods['sts']), 'Service selects both workloads')
expect(not matches(svc['spec']['selector'], pods['job']), 'Service does not select the Job pod')
expect(matches(np_base['spec']['podSelector']['matchLabels'], pods['dep']), 'base NetworkPolicy selects Deployment pods')
expect(not matches(np_base['spec']['podSelector']['matchLabels'], pods['job']), 'base NetworkPolicy does not select the Job pod')
expect(matches(np_pg['spec']['podSelector']['matchLabels'], pods['dep']) and matches(np_pg['spec']['podSelector']['matchLabels'], pods['job']), 'postgres NetworkPolicy selects Deployment and Job pods')
expect(not matches(np_pg['spec']['podSelector']['matchLabels'], pods['sts']), 'postgres NetworkPolicy does not select the StatefulSet pod')
expect(any(p.get('port') == 5432 for r in np_pg['spec']['egress'] for p in r.get('ports', [])), 'postgres NetworkPolicy allows 5432')
for tsc in dep['spec']['template']['spec']['topologySpreadConstraints']:
    expect(matches(tsc['labelSelector']['matchLabels'], pods['dep']), 'spread constraint %s counts the Deployment pods' % tsc['topologyKey'])
vct = sts['spec']['volumeClaimTemplates'][0]['metadata']['name']
claim = [v for v in job['spec']['template']['spec']['volumes'] if 'persistentVolumeClaim' in v][0]['persistentVolumeClaim']['claimName']
expect(claim == '%s-%s-0' % (vct, sts['metadata']['name']), 'Job mounts the StatefulSet pod 0 claim (%s)' % claim)
expect(not any('persistentVolumeClaim' in v for v in dep['spec']['template']['spec']['volumes']) and 'volumeClaimTemplates' not in dep['spec'], 'Deployment has no data volume')
for name, w in [('Deployment', dep), ('Job', job), ('StatefulSet', sts)]:
    spec = w['spec']['template']['spec']
    for v in spec['volumes']:
        if 'configMap' in v:
            expect(('ConfigMap', v['configMap']['name']) in docs, '%s ConfigMap %s exists' % (name, v['configMap']['name']))
    c = spec['containers'][0]
    mounts = {m['name'] for m in c['volumeMounts']}
    declared = {v['name'] for v in spec['volumes']} | {t['metadata']['name'] for t in w['spec'].get('volumeClaimTemplates', [])}
    expect(mounts <= declared, '%s mounts only declared volumes' % name)
    expect(c['envFrom'][0]['secretRef']['name'] == 'clinicea-notifier-env', '%s reads the Secret' % name)
for name, w in [('Deployment', dep), ('Job', job)]:
    c = w['spec']['template']['spec']['containers'][0]
    env = {e['name']: e for e in c.get('env', [])}
    expect(env['DATABASE_URL']['valueFrom']['secretKeyRef'] == {'name': 'clinicea-notifier-env', 'key': 'DATABASE_URL'}, '%s DATABASE_URL from the Secret key' % name)
secret = docs[('Secret', 'clinicea-notifier-env')]
expect('DATABASE_URL' in secret['stringData'], 'example Secret has DATABASE_URL')
# Same securityContext and probes as the StatefulSet
for k in ('securityContext', 'automountServiceAccountToken', 'terminationGracePeriodSeconds'):
    expect(dep['spec']['template']['spec'][k] == sts['spec']['template']['spec'][k], 'Deployment pod %s as the StatefulSet' % k)
    if k != 'terminationGracePeriodSeconds':
        expect(job['spec']['template']['spec'][k] == sts['spec']['template']['spec'][k], 'Job pod %s as the StatefulSet' % k)
sc, dc = sts['spec']['template']['spec']['containers'][0], dep['spec']['template']['spec']['containers'][0]
for k in ('securityContext', 'livenessProbe', 'readinessProbe', 'startupProbe', 'ports', 'resources', 'image', 'args'):
    expect(sc[k] == dc[k], 'Deployment container %s as the StatefulSet' % k)
expect(job['spec']['template']['spec']['containers'][0]['securityContext'] == sc['securityContext'], 'Job container securityContext as the StatefulSet')
ru = dep['spec']['strategy']['rollingUpdate']
expect(dep['spec']['replicas'] == 3 and ru['maxUnavailable'] == 1, 'Deployment: 3 replicas, maxUnavailable 1')
# The two configs differ only in store:
a = yaml.safe_load(docs[('ConfigMap', 'clinicea-notifier')]['data']['clinicea-notifier.yaml'])
b = yaml.safe_load(docs[('ConfigMap', 'clinicea-notifier-postgres')]['data']['clinicea-notifier.yaml'])
sa, sb = a.pop('store'), b.pop('store')
expect(a == b, 'the two configs are the same outside store:')
expect(sb == {'backend': 'postgres', 'url': '${DATABASE_URL}', 'lease': '30s'}, 'postgres store section: %s' % sb)
expect(sa == {'path': sts['spec']['template']['spec']['containers'][0]['volumeMounts'][0]['mountPath']}, 'sled store path is the volume mount')
expect([m['mountPath'] for m in job['spec']['template']['spec']['containers'][0]['volumeMounts'] if m['name'] == 'data'] == [sa['path']], 'Job mounts the volume at the sled store.path')
sys.exit(0 if ok else 1)
